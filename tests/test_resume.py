"""Kill `rnnjax train` anywhere (SIGKILL, mid-save, SIGTERM), resume it, and get the very same numbers.

Each run is a subprocess driven by DRIVER, which kills its own process at a chosen
point: after the host has read step K's metrics and saves in flight have committed
(`kill`, `term`; `jumpkill` also moves the clock 1,000 s ahead at step 1), or inside Orbax's commit of the step-K checkpoint, after its files
are written but before the rename, while training goes on (`save`). The final parameters, every metrics.jsonl record and summary.json of the
pieced-together run must equal those of an uninterrupted run exactly (timings aside).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from rnnjax import checkpoint, config as config_lib
from rnnjax.model import make_lm
from rnnjax.records import read_metrics

import tiny

DRIVER = """
import os, pathlib, signal, sys, time
from orbax.checkpoint._src.path import atomicity
from rnnjax import cli, progress

mode, at = sys.argv[1], int(sys.argv[2])
checkpoints = pathlib.Path(sys.argv[sys.argv.index("--workdir") + 1]) / "checkpoints"
if mode in ("kill", "term", "jumpkill"):
    update, clock, ahead = progress.Progress.update, time.time, [0.0]
    time.time = lambda: clock() + ahead[0]

    def killing_update(self, step):
        update(self, step)
        if step == 1 and mode == "jumpkill":
            ahead[0] = 1000.0
        if step == at:
            while any(checkpoints.glob("*tmp*")):  # let saves in flight commit: a known resume point
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGTERM if mode == "term" else signal.SIGKILL)

    progress.Progress.update = killing_update
elif mode == "save":
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def killing_finalize(self):
        if self._final_path.name == str(at):
            os.kill(os.getpid(), signal.SIGKILL)
        await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize
sys.exit(cli.main(sys.argv[3:]))
"""

TINY = {**tiny.LM,  # 24 steps per epoch for either sampling
        "model.num_layers": 2, "model.dropout": 0.3, "train.num_epochs": 2, "train.optimizer": "adam",
        "train.learning_rate": 0.01, "train.schedule": "cosine", "checkpoint.every_steps": 5, "checkpoint.keep": 2}
TIMINGS = {"tokens_per_s", "wall_s"}


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory) -> dict:
    """A persistent XLA cache shared by this module's subprocesses: each compiles once, not per run."""
    return {"JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1",
            "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("xla_cache")),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def run(env: dict, workdir: Path, mode: str = "none", at: int = 0, **overrides) -> subprocess.CompletedProcess:
    args = ["train", "--config", "quickstart", "--workdir", str(workdir)]
    args += [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]
    return subprocess.run([sys.executable, "-c", DRIVER, mode, str(at), *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})


def outcome(workdir: Path) -> tuple[list, dict, list]:
    """(metrics records, summary, final params) with timing fields removed."""
    records = [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(workdir / "metrics.jsonl")]
    summary = {k: v for k, v in json.loads((workdir / "summary.json").read_text()).items() if k not in TIMINGS}
    config = config_lib.from_json(workdir / "config.json")
    lm = make_lm(config, config.data.synthetic_vocab_size)
    params = jax.tree.leaves(checkpoint.restore_params(workdir, lm.init)[0])
    return records, summary, [np.asarray(p) for p in params]


def assert_same(got: tuple, want: tuple) -> None:
    records, summary, params = got
    assert records == want[0]
    assert summary == want[1]
    assert len(params) == len(want[2])
    for a, b in zip(params, want[2]):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def killed(proc: subprocess.CompletedProcess) -> bool:
    return proc.returncode == -signal.SIGKILL


def test_kills_mid_step_mid_save_sigterm_and_a_truncated_checkpoint_resume_bit_identically(tmp_path, compile_cache):
    ref = tmp_path / "ref"
    assert run(compile_cache, ref).returncode == 0
    want = outcome(ref)
    assert sum(r.get("split") == "train" for r in want[0]) == 48  # every step's loss is compared

    work = tmp_path / "work"
    assert killed(run(compile_cache, work, "kill", 7))  # mid-epoch, between the saves at 5 and 10
    proc = run(compile_cache, work, "save", 24)  # while the end-of-epoch checkpoint is being committed
    assert killed(proc) and "resuming from the checkpoint at step 5 (epoch 1, batch 5 of 24 done)" in proc.stdout
    assert not (work / "checkpoints" / "24").exists()
    proc = run(compile_cache, work, "term", 31)  # SIGTERM in epoch 2: finish the step, checkpoint, exit 0
    assert proc.returncode == 0, proc.stderr
    assert "resuming from the checkpoint at step 20 (epoch 1, batch 20 of 24 done)" in proc.stdout
    assert "stopped by SIGTERM at step 32 (epoch 2, batch 8 of 24 done)" in proc.stdout and "rnnjax train --workdir" in proc.stdout
    with checkpoint.Checkpoints(work, config_lib.defaults(), read_only=True) as ckpts:
        assert ckpts.steps()[-1] == 32

    newest = work / "checkpoints" / "32"
    for f in (newest / "params").rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    proc = run(compile_cache, work)
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint at step 32 is incomplete or corrupt" in proc.stdout
    assert "resuming from the checkpoint at step 30" in proc.stdout
    assert_same(outcome(work), want)


def test_random_sampling_with_dropout_resumes_across_the_epoch_boundary(tmp_path, compile_cache):
    settings = {"data.sampling": "random", "checkpoint.every_steps": 0}
    ref = tmp_path / "ref"
    assert run(compile_cache, ref, **settings).returncode == 0
    work = tmp_path / "work"
    # only the end-of-epoch checkpoint (24) exists; the first start's clock jumps 1,000 s, a long first stretch
    assert killed(run(compile_cache, work, "jumpkill", 30, **settings))
    proc = run(compile_cache, work, **settings)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from the checkpoint at step 24 (end of epoch 1)" in proc.stdout
    assert_same(outcome(work), outcome(ref))
    # the resumed run's clock goes on from the checkpoint's: wall_s counts the first stretch too
    walls = [(r["step"], r["wall_s"]) for r in read_metrics(work / "metrics.jsonl") if "wall_s" in r]
    assert walls[0][0] == 24 and walls[0][1] >= 1000 and walls[-1][0] == 48
    assert all(b[1] >= a[1] for a, b in zip(walls, walls[1:])), walls
    summary = json.loads((work / "summary.json").read_text())
    assert walls[-1][1] <= summary["wall_s"] < walls[0][1] + 300
