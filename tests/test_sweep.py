"""rnnjax sweep: grid expansion, run names, shards, parameter matching, skip/resume/retry, determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnjax import cli, config as config_lib, launch, model, report, sweep

REPO = Path(__file__).resolve().parents[1]

TINY = '''
from rnnjax.config import defaults
from rnnjax.sweep import product, sweep, zipped


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "synthetic"
    c.data.synthetic_vocab_size = 8
    c.data.synthetic_train_tokens = {train_tokens}
    c.data.synthetic_eval_tokens = 300
    c.model.hidden_size = 8
    c.model.embed_size = 4
    c.train.batch_size = 4
    c.train.seq_len = 8
    c.train.max_steps = {steps}
    c.train.optimizer = "adam"
    c.train.learning_rate = 1e-2
    c.train.log_every = 5
    c.eval.batch_size = 2
    c.eval.seq_len = 50
    return c


def get_sweep():
    return {grid}
'''


def write_sweep(tmp_path: Path, grid: str, steps: int = 10, train_tokens: int = 2000, name: str = "tiny.py") -> str:
    path = tmp_path / name
    path.write_text(TINY.format(grid=grid, steps=steps, train_tokens=train_tokens))
    return str(path)


def expand(spec: str, overrides: dict | None = None) -> list[sweep.Point]:
    return sweep.expand(config_lib.load(spec), sweep.load_grid(spec), overrides or {}, where=spec)


def test_product_zip_and_overrides(tmp_path):
    spec = write_sweep(tmp_path, 'product(sweep("config.model.cell", ["gru", "lstm"]), '
                                 'zipped(sweep("config.model.dropout", [0.0, 0.5]), '
                                 'sweep("config.train.learning_rate", [0.1, 0.2])), sweep("config.seed", [0, 1]))')
    points = expand(spec, {"train.max_steps": "3"})
    assert len(points) == 2 * 2 * 2
    assert [p.values["model.cell"] for p in points] == ["gru"] * 4 + ["lstm"] * 4  # first axis slowest
    assert [(p.values["model.dropout"], p.values["train.learning_rate"]) for p in points[:4:2]] == [(0.0, 0.1),
                                                                                                  (0.5, 0.2)]
    assert [p.values["seed"] for p in points[:2]] == [0, 1]
    assert all(p.overrides["train.max_steps"] == "3" for p in points)
    assert points[7].overrides["model.dropout"] == "0.5"
    config = config_lib.apply_overrides(config_lib.load(spec), points[7].overrides)
    assert (config.model.cell, config.model.dropout, config.train.learning_rate, config.seed) == ("lstm", 0.5, 0.2, 1)


def test_names_are_readable_and_stable(tmp_path):
    spec = write_sweep(tmp_path, 'product(sweep("config.model.cell", ["gru"]), sweep("config.model.num_layers", [2]), '
                                 'sweep("config.model.dropout", [0.5]), sweep("config.seed", [0]), '
                                 'sweep("config.train.optimizer", ["adamw"]), sweep("config.train.weight_decay", [1e-4]), '
                                 'sweep("config.model.layer_sizes", [(8, 4)]))')
    first, second = expand(spec), expand(spec)
    assert first[0].name == "cell=gru,layers=2,dropout=0.5,seed=0,opt=adamw,weight_decay=0.0001,layer_sizes=8-4"
    assert [p.name for p in first] == [p.name for p in second]
    assert sweep.short_names(["model.dropout", "data.dropout"]) == {"model.dropout": "model.dropout",
                                                                    "data.dropout": "data.dropout"}


@pytest.mark.parametrize("grid, message", [
    ('sweep("config.model.cel", ["gru"])', "unknown sweep key 'config.model.cel' (did you mean 'config.model.cell'?)"),
    ('sweep("config.model.cell", [])', "sweep axis 'config.model.cell' is empty"),
    ('sweep("model.cell", ["gru"])', "must be written config.KEY"),
    ('zipped(sweep("config.seed", [0, 1]), sweep("config.model.cell", ["gru"]))', "different lengths"),
    ('product(sweep("config.seed", [0]), sweep("config.seed", [1]))', "appears in more than one axis"),
    ('sweep("config.model.num_layers", ["two"])', "bad value 'two' for config key 'model.num_layers'"),
    ('sweep("config.model.dropout", [1.5])', "'model.dropout' = 1.5: expected in [0, 1)"),
    ('[]', "must return a non-empty list"),
])
def test_bad_sweeps_give_one_line_errors(tmp_path, capsys, grid, message):
    spec = write_sweep(tmp_path, grid)
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "s"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnjax: error:") and err.count("\n") == 1 and message in err, err


def test_cli_override_of_swept_key_and_bad_shard_are_refused(tmp_path, capsys):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0, 1])')
    args = ["sweep", "--config", spec, "--workdir", str(tmp_path / "s"), "--dry-run"]
    assert cli.main(args + ["--config.seed=3"]) == 2
    assert "overrides a swept key" in capsys.readouterr().err
    assert cli.main(args + ["--shard", "2/2"]) == 2
    assert "expected I/N with 0 <= I < N" in capsys.readouterr().err


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 13])
def test_shards_partition_points_exactly(tmp_path, n):
    spec = write_sweep(tmp_path, 'product(sweep("config.model.cell", ["rnn_tanh", "gru", "lstm"]), '
                                 'sweep("config.model.num_layers", [1, 2]), sweep("config.seed", [0, 1]))')
    points = expand(spec)
    shards = [sweep.shard(points, i, n) for i in range(n)]
    names = [p.name for s in shards for p in s]
    assert sorted(names) == sorted(p.name for p in points) and len(names) == len(set(names)) == 12
    assert sweep.parse_shard("1/4") == (1, 4)


def test_dry_run_lists_shard_points(tmp_path, capsys):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0, 1, 2, 3, 4])')
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "s"), "--dry-run", "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert "seed=1" in out and "seed=3" in out and "seed=0" not in out and "2 of 5 points" in out
    assert not (tmp_path / "s").exists()


def test_match_params_within_two_percent(tmp_path):
    spec = write_sweep(tmp_path, 'product(sweep("config.model.cell", ["rnn_tanh", "gru", "lstm"]), '
                                 'sweep("config.model.num_layers", [1, 2]))')
    base = config_lib.apply_overrides(config_lib.load(spec), {"model.hidden_size": "64", "sweep.match_params": "true"})
    points = sweep.expand(base, sweep.load_grid(spec), {}, vocab_size=lambda config: 50)
    for p in points:
        config = config_lib.apply_overrides(base, p.overrides)
        lstm = config_lib.apply_overrides(config, {"model.cell": "lstm", "model.hidden_size": "64"})
        ratio = model.param_count(config, 50) / model.param_count(lstm, 50)
        assert abs(ratio - 1) <= 0.02, (p.name, ratio)
    hidden = {p.name: int(p.overrides["model.hidden_size"]) for p in points}
    assert hidden["cell=lstm,layers=1"] == 64 and hidden["cell=rnn_tanh,layers=1"] > hidden["cell=gru,layers=1"] > 64


def test_job_placement_splits_cpu_cores():
    slots = launch.job_placement(2)
    assert len(slots) == 2
    if not launch._gpu_count() and len(os.sched_getaffinity(0)) >= 2 and slots[0][0]:
        cores = [set(prefix[-1].split(",")) for prefix, _ in slots]
        assert not cores[0] & cores[1]
    assert launch.job_placement(1) == [([], {})]


def _sweep(capsys, spec: str, workdir: Path, *extra: str) -> tuple[int, str]:
    """`rnnjax sweep ...` (its points still run as `rnnjax train` processes); exit code and output."""
    rc = cli.main(["sweep", "--config", spec, "--workdir", str(workdir), *extra])
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def results_rows(workdir: Path) -> list[dict]:
    """A sweep's results.jsonl rows without their timings (the only fields that differ between reruns)."""
    return [{k: v for k, v in json.loads(line).items() if k not in report.TIMING_FIELDS}
            for line in (workdir / "results.jsonl").read_text().splitlines()]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc): what a launcher test signals or waits for. A thread
    or process that ends while it is being read is skipped."""
    kids = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    for t in tasks:
        try:
            kids += [int(c) for c in (t / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return kids + [d for k in kids for d in descendants(k)]


def test_two_point_sweep_is_deterministic_and_rerun_does_no_training(tmp_path, capsys):
    spec = write_sweep(tmp_path, 'product(sweep("config.model.cell", ["gru", "lstm"]), sweep("config.seed", [0]))')
    rc, out = _sweep(capsys, spec, tmp_path / "a", "--jobs", "2")
    assert rc == 0, out
    rows = results_rows(tmp_path / "a")
    assert [r["run"] for r in rows] == ["cell=gru,seed=0", "cell=lstm,seed=0"]
    assert all(r["status"] == "done" and r["test_ppl"] > 1 for r in rows)
    stamps = sorted(p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*/summary.json"))
    rc, out = _sweep(capsys, spec, tmp_path / "a", "--jobs", "2")
    assert rc == 0 and "2 finished (skipped)" in out and "0 to run" in out and "start" not in out, out
    assert sorted(p.stat().st_mtime_ns for p in (tmp_path / "a").glob("*/summary.json")) == stamps
    rc, out = _sweep(capsys, spec, tmp_path / "b", "--jobs", "2")
    assert rc == 0, out
    assert results_rows(tmp_path / "b") == rows


def test_failed_points_are_recorded_and_retried_only_on_request(tmp_path, capsys):
    spec = write_sweep(tmp_path, 'sweep("config.data.corpus", ["ptb"])')
    missing = str(tmp_path / "no_data")
    rc, out = _sweep(capsys, spec, tmp_path / "s", "--data-dir", missing)
    assert rc == 1 and "FAILED: rnnjax: error: corpus 'ptb': file" in out, out
    status = json.loads((tmp_path / "s" / "corpus=ptb" / "status.json").read_text())
    assert status["status"] == "failed" and status["error"].startswith("rnnjax: error: corpus 'ptb'")
    rc, out = _sweep(capsys, spec, tmp_path / "s", "--data-dir", missing)
    assert rc == 1 and "0 to run" in out and "failed earlier: corpus=ptb" in out, out
    rc, out = _sweep(capsys, spec, tmp_path / "s", "--data-dir", missing, "--retry-failed")
    assert rc == 1 and "1 to run" in out, out
    assert "failed" in (tmp_path / "s" / "results.md").read_text()


def test_killed_sweep_resumes_from_checkpoints(tmp_path, capsys):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0, 1])', steps=300, train_tokens=20_000)
    workdir = tmp_path / "s"
    overrides = ["--config.checkpoint.every_steps=20"]
    proc = subprocess.Popen([sys.executable, "-m", "rnnjax", "sweep", "--config", spec, "--workdir", str(workdir),
                             *overrides], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    first, second = workdir / "seed=0", workdir / "seed=1"

    def saved(run_dir: Path) -> bool:
        return any(p.name.isdigit() for p in (run_dir / "checkpoints").glob("*"))

    try:
        deadline = time.time() + 200
        while not saved(second) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert saved(second), "the sweep never reached a checkpoint of its second point"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (second / "summary.json").exists()
    stamp = (first / "summary.json").stat().st_mtime_ns
    deadline = time.time() + 30  # the killed training process exits (and so releases its claim) soon after
    while launch.point_status(second) == "running" and time.time() < deadline:
        time.sleep(0.05)
    assert launch.point_status(second) == "interrupted"
    rc, out = _sweep(capsys, spec, workdir, *overrides)
    assert rc == 0 and "1 finished (skipped)" in out and "start seed=1 (resuming)" in out, out
    assert (first / "summary.json").stat().st_mtime_ns == stamp
    assert "resuming from the checkpoint at step" in (second / "train.log").read_text()
    assert [r["status"] for r in results_rows(workdir)] == ["done", "done"]
