"""Data parallelism (rnnjax.parallel) on simulated CPU devices, in subprocesses.

Each subprocess sets XLA_FLAGS=--xla_force_host_platform_device_count before JAX starts.
One driver process (8 devices) trains a tiny LSTM with dropout for 8 steps on 1 device and
for 8 steps on 8 devices with the same global batch (checkpoint at step 4), then resumes
that step-4 checkpoint on 1 and on 8 devices. Two more processes (2 devices each), joined
by `jax.distributed.initialize` on 127.0.0.1, resume it on their 4-device mesh.
The processes share a persistent compilation cache, so no program is compiled twice.

Tolerance: losses agree to RTOL. Summing the batch on 8 devices and all-reducing changes
the float32 reduction order; that is the only difference (dropout bits do not change).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

RTOL = 2e-5  # relative difference allowed between losses on different device counts
STEPS, RESUMED_STEPS = 4, 8
OVERRIDES = {
    "model.hidden_size": "16", "model.embed_size": "8", "model.num_layers": "1", "model.dropout": "0.3",
    "train.batch_size": "16", "train.seq_len": "8", "train.optimizer": "adam", "train.learning_rate": "0.01",
    "train.log_every": "1", "data.synthetic_train_tokens": "20000", "data.synthetic_eval_tokens": "2000",
    "eval.batch_size": "4", "eval.seq_len": "50",
}


def _env(devices: int, cache: Path) -> dict:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.pop("JAX_COORDINATOR_ADDRESS", None)
    return env


def _train_losses(workdir: Path) -> dict[int, float]:
    from rnnjax.records import read_metrics

    return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if r.get("split") == "train"}


def _driver(tmp: Path) -> dict:
    """Runs inside the 8-device subprocess; returns what the tests check."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from rnnjax import config as config_lib, loop, parallel, recurrent, rundir
    from rnnjax.tasks import lm
    from rnnjax.errors import ConfigError

    out = {"devices": jax.device_count()}

    def config(num_devices: int, steps: int):
        return config_lib.apply_overrides(config_lib.defaults(), {
            **OVERRIDES, "parallel.num_devices": str(num_devices), "train.max_steps": str(steps)})

    errors = []
    for n, batch in ((8, 12), (16, 16)):
        c = config_lib.apply_overrides(config(n, 1), {"train.batch_size": str(batch)})
        try:
            parallel.make_layout(c)
        except ConfigError as e:
            errors.append(str(e))
    out["errors"] = errors

    layout = parallel.make_layout(config(8, 1))
    key = jax.random.key(3)
    shape = (5, 16, 7)  # [T, B, D]: B split over the devices
    sharded = jax.jit(lambda k: recurrent.dropout_mask(k, 0.5, shape),
                      out_shardings=NamedSharding(layout.mesh, PartitionSpec(None, parallel.DATA)))(key)
    out["mask_shards"] = len(sharded.addressable_shards)
    out["mask_equal"] = bool((np.asarray(sharded) == np.asarray(recurrent.dropout_mask(key, 0.5, shape))).all())

    quiet = lambda _: None  # noqa: E731

    def run(c, workdir: Path) -> dict:
        with rundir.open_run(workdir, c) as run:
            return loop.train(lm.make(c, run, tmp, quiet), c, run, log=quiet)

    run(config(1, RESUMED_STEPS), tmp / "one")
    eight = config_lib.apply_overrides(config(8, RESUMED_STEPS), {"checkpoint.every_steps": str(STEPS)})
    out["summary8_devices"] = run(eight, tmp / "eight")["num_devices"]
    for n in (1, 8):
        _copy_at_step4(tmp / "eight", tmp / f"resumed{n}")
        out[f"resumed{n}_devices"] = run(config(n, RESUMED_STEPS), tmp / f"resumed{n}")["num_devices"]
    return out


def _copy_at_step4(src: Path, dst: Path) -> None:
    """A copy of an 8-step run directory as it was when its step-4 checkpoint was written."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("summary.json"))
    shutil.rmtree(dst / "checkpoints" / str(RESUMED_STEPS))


@pytest.fixture(scope="module")
def driven(tmp_path_factory) -> tuple[dict, Path]:
    tmp = tmp_path_factory.mktemp("parallel")
    code = f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_parallel as t; " \
           f"from pathlib import Path; print(json.dumps(t._driver(Path({str(tmp)!r}))))"
    proc = subprocess.run([sys.executable, "-c", code], env=_env(8, tmp / "jax_cache"), capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), tmp


def test_bad_device_counts_are_one_line_config_errors(driven):
    out, _ = driven
    assert out["devices"] == 8
    not_divisible, too_many = out["errors"]
    assert "'train.batch_size' = 12" in not_divisible and "8 devices" in not_divisible and "\n" not in not_divisible
    assert "'parallel.num_devices' = 16" in too_many and "8 devices visible" in too_many


def test_dropout_masks_do_not_depend_on_sharding(driven):
    out, _ = driven
    assert out["mask_shards"] == 8 and out["mask_equal"]


def test_eight_devices_match_one_device_with_dropout(driven):
    out, tmp = driven
    one, eight = _train_losses(tmp / "one"), _train_losses(tmp / "eight")
    assert out["summary8_devices"] == 8
    steps = list(range(1, RESUMED_STEPS + 1))
    assert sorted(eight) == steps
    np.testing.assert_allclose([eight[s] for s in steps], [one[s] for s in steps], rtol=RTOL)
    assert len({round(one[s], 4) for s in steps}) == len(steps)  # the losses move: a real comparison


def test_checkpoint_from_eight_devices_resumes_on_one(driven):
    out, tmp = driven
    assert out["resumed1_devices"] == 1
    resumed, one = _train_losses(tmp / "resumed1"), _train_losses(tmp / "one")
    assert sorted(resumed) == list(range(1, RESUMED_STEPS + 1))
    later = range(STEPS + 1, RESUMED_STEPS + 1)  # trained after the restore
    np.testing.assert_allclose([resumed[s] for s in later], [one[s] for s in later], rtol=RTOL)


def test_resume_on_the_same_eight_devices_is_bit_identical(driven):
    out, tmp = driven
    assert out["resumed8_devices"] == 8
    assert _train_losses(tmp / "resumed8") == _train_losses(tmp / "eight")


def test_only_a_multi_process_launch_initializes_jax_distributed(monkeypatch):
    from rnnjax import parallel

    calls = []
    monkeypatch.setattr(parallel.jax.distributed, "initialize", lambda *args: calls.append(args))
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")  # e.g. one task of a SLURM array: independent runs
    assert parallel.initialize() is False and calls == []
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "4")  # srun with 4 tasks: JAX reads the rest from SLURM
    assert parallel.initialize() is True and calls == [(None, None, None)]
    assert parallel.initialize("10.0.0.1:1234", 2, 1) is True and calls[-1] == ("10.0.0.1:1234", 2, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_resume_on_four_devices_and_write_one_set_of_outputs(driven):
    """2 processes x 2 CPU devices = one 4-device mesh; each builds only its half of every batch."""
    _, tmp = driven
    workdir = tmp / "two_processes"
    _copy_at_step4(tmp / "eight", workdir)
    port = _free_port()
    args = [f"--config.{k}={v}" for k, v in OVERRIDES.items()] + [f"--config.train.max_steps={RESUMED_STEPS}",
                                                                  "--config.parallel.num_devices=0"]
    code = ("import json, sys; from rnnjax import cli, config, parallel; rc = cli.main(sys.argv[1:]); "
            "c = config.apply_overrides(config.defaults(), {'train.batch_size': '16'}); "
            "rows = parallel.make_layout(c).local_rows; "
            "print(json.dumps({'rc': rc, 'rows': [rows.start, rows.stop]}), file=sys.stderr)")
    procs = [subprocess.Popen(
        [sys.executable, "-c", code, "train", "--workdir", str(workdir), "--coordinator", f"127.0.0.1:{port}",
         "--num-processes", "2", "--process-id", str(i), *args],
        env=_env(2, tmp / "jax_cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    ends = [json.loads(err.strip().splitlines()[-1]) for _, err in results]
    assert [e["rc"] for e in ends] == [0, 0]
    assert [e["rows"] for e in ends] == [[0, 8], [8, 16]]
    assert "resuming from the checkpoint at step 4" in results[0][0]
    # Only process 0 prints. (Gloo's C++ lines go straight to fd 1 in every process, and can arrive
    # torn into fragments such as "1", so the check is that none of rnnjax's own lines are there.)
    assert not any(word in results[1][0] for word in ("run directory", "resuming", "step ", "test_ppl", "wrote"))
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["num_processes"], summary["num_devices"]) == (2, 4)
    records = (workdir / "metrics.jsonl").read_text().splitlines()
    assert sum('"split": "train"' in r for r in records) == RESUMED_STEPS  # one writer, no duplicate lines
    losses, one = _train_losses(workdir), _train_losses(tmp / "one")
    assert sorted(losses) == list(range(1, RESUMED_STEPS + 1))
    later = range(STEPS + 1, RESUMED_STEPS + 1)
    np.testing.assert_allclose([losses[s] for s in later], [one[s] for s in later], rtol=RTOL)
    assert str(RESUMED_STEPS) in {p.name for p in (workdir / "checkpoints").iterdir()}
    # the 4-device checkpoint restores in a 1-device process for `rnnjax eval`, same test loss
    proc = subprocess.run([sys.executable, "-m", "rnnjax", "eval", "--workdir", str(workdir)],
                          env=_env(1, tmp / "jax_cache"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["loss"] == summary["test_loss"]
