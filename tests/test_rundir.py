"""Fault injection: every way a run directory can be misused ends in one line, or in the run it holds.

Each CLI case runs `rnnjax` in a subprocess and checks the exit code, that stderr is one
`rnnjax: error:` line (no traceback), and that the directory's files still describe
the run that ran.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnjax import checkpoint, config as config_lib, rundir
from rnnjax.errors import RunDirError

import tiny

REPO = Path(__file__).resolve().parents[1]
TINY = tiny.LM


def flags(**overrides) -> list[str]:
    return [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]


def rnnjax(*args: str, cwd: Path = REPO, umask: int | None = None, max_file_kb: int | None = None,
           wait: bool = True):
    """`python -m rnnjax ARGS` in a subprocess: (exit code, stdout, stderr), or the Popen when not `wait`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rnnjax", *args]
    if umask is not None:  # set by a shell, not preexec_fn (a fork of this multithreaded JAX process)
        cmd = ["sh", "-c", f'umask {umask:03o} && exec "$0" "$@"', *cmd]
    if max_file_kb is not None:  # a disk that fills up: writes past the limit fail (EFBIG), as on a full disk
        cmd = ["sh", "-c", f'trap "" XFSZ && ulimit -f {2 * max_file_kb} && exec "$0" "$@"', *cmd]
        env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the run's files fill the disk here, not the suite's cache
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("rnnjax: error: "), err
    return lines[0]


def saved(run_dir: Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())


# ---- which run a directory holds --------------------------------------------------------------

def test_killed_before_its_first_checkpoint_continues_its_own_config(tmp_path):
    """A PTB-like run whose config.json is all there is: a bare `rnnjax train --workdir` continues it,
    never the quickstart."""
    run = tmp_path / "run"
    config = config_lib.apply_overrides(config_lib.defaults(), {k: str(v) for k, v in TINY.items()} |
                                        {"model.cell": "gru", "train.max_steps": "4"})
    rundir.open_run(run, config).release()  # as if killed right after the claim
    rc, out, err = rnnjax("train", "--workdir", str(run))
    assert rc == 0, err
    assert "continuing the run it holds" in out and "gru" in out
    assert saved(run)["model"]["cell"] == "gru" and saved(run)["data"]["synthetic_train_tokens"] == 2000
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


def test_a_deleted_config_json_is_recovered_from_the_newest_checkpoint(tmp_path):
    run = tmp_path / "run"
    assert rnnjax("train", "--workdir", str(run), *flags(**{"model.cell": "gru", "train.max_steps": 6,
                                                           "checkpoint.every_steps": 3}))[0] == 0
    (run / "config.json").unlink()
    (run / "summary.json").unlink()  # as if killed after step 6's checkpoint
    rc, out, err = rnnjax("train", "--workdir", str(run))
    assert rc == 0, err
    assert saved(run)["model"]["cell"] == "gru" and "resuming from the checkpoint at step 6" in out


def test_run_files_without_any_config_are_refused_and_kept(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 3.0}\n')
    rc, _, err = rnnjax("train", "--workdir", str(run))
    assert rc == 2 and "no config.json and no checkpoint" in one_line_error(err)
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


def test_a_foreign_directory_is_refused_and_restart_moves_it_aside(tmp_path):
    run = tmp_path / "notes"
    run.mkdir()
    (run / "todo.txt").write_text("mine")
    rc, _, err = rnnjax("train", "--workdir", str(run), *flags(**{"train.max_steps": 2}))
    assert rc == 2 and "holds files (todo.txt)" in one_line_error(err) and "--restart" in err
    assert (run / "todo.txt").read_text() == "mine" and not (run / "config.json").exists()
    rc, out, err = rnnjax("train", "--workdir", str(run), "--restart", *flags(**{"train.max_steps": 2}))
    assert rc == 0, err
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("notes.old-")]
    assert len(moved) == 1 and (moved[0] / "todo.txt").read_text() == "mine" and f"aside to {moved[0]}" in out
    assert (run / "summary.json").is_file()


def test_another_config_is_refused_and_a_finished_run_is_left_as_it_was(tmp_path):
    run = tmp_path / "run"
    assert rnnjax("train", "--workdir", str(run), *flags(**{"train.max_steps": 3}))[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    rc, out, err = rnnjax("train", "--workdir", str(run), *flags(**{"train.max_steps": 3}))
    assert rc == 0 and "this run finished earlier (test_ppl " in out and "summary.json left as it was" in out, err
    rc, _, err = rnnjax("train", "--workdir", str(run), *flags(**{"train.max_steps": 3, "model.cell": "gru"}))
    assert rc == 2 and "differs in model.cell" in one_line_error(err)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == {k: v for k, v in before.items() if k != ".lock"}


def test_an_unfinished_run_refuses_another_config_before_touching_anything(tmp_path):
    run = tmp_path / "run"
    config = config_lib.apply_overrides(config_lib.defaults(), {k: str(v) for k, v in TINY.items()})
    rundir.open_run(run, config).release()
    rc, _, err = rnnjax("train", "--workdir", str(run), *flags(**{"model.hidden_size": 32}))
    assert rc == 2 and "holds a run of another config (differs in model.hidden_size" in one_line_error(err)
    assert saved(run)["model"]["hidden_size"] == 16


def test_two_processes_never_share_a_directory(tmp_path):
    run = tmp_path / "run"
    first = rnnjax("train", "--workdir", str(run), *flags(**{"train.max_steps": 100_000, "train.num_epochs": 5000}),
                   wait=False)
    try:
        deadline = time.time() + 120
        while rundir.holder(run) is None and time.time() < deadline:
            time.sleep(0.05)
        assert f"pid {first.pid}" in (rundir.holder(run) or "")
        rc, _, err = rnnjax("train", "--workdir", str(run))
        line = one_line_error(err)
        assert rc == 2 and f"in use by pid {first.pid}" in line and "one run at a time" in line
        while not checkpoint.saved_steps(run) and time.time() < deadline:  # training is under way
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and "stopped by SIGTERM at step" in out
    assert rundir.holder(run) is None  # released with the process


def test_the_same_bare_command_continues_the_same_run(tmp_path):
    """`rnnjax train` without --workdir names its directory from the config and overrides, so the
    README's "run the same command again" resumes; the stop and resume messages name the same step."""
    args = ["train", *flags(**{"train.num_epochs": 5000, "checkpoint.every_steps": 5})]
    first = rnnjax(*args, cwd=tmp_path, wait=False)
    deadline = time.time() + 120
    runs: list[Path] = []
    while not runs and time.time() < deadline:
        runs = [p for p in (tmp_path / "runs").glob("quickstart-*") if len(checkpoint.saved_steps(p)) >= 2]
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 0 and len(runs) == 1, out
    stopped = out.split("stopped by SIGINT at ")[1].split(";")[0]  # "step N (epoch E, batch B of 24 done)"
    assert f"Resume with: rnnjax train --workdir {runs[0].relative_to(tmp_path)}" in out
    again = rnnjax(*args, cwd=tmp_path, wait=False)
    try:
        line = ""
        while "resuming from" not in line and again.poll() is None:
            line = again.stdout.readline()
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=120)
    assert line.strip() == f"resuming from the checkpoint at {stopped} in {runs[0] / 'checkpoints'}"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [runs[0].name]


# ---- validation before any directory ----------------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("model.cell", "lstmm", "did you mean 'lstm'"),
    ("model.hidden_size", "0", "at least 1"),
    ("train.batch_size", "-4", "at least 1"),
    ("train.log_every", "0", "at least 1"),
    ("eval.every_epochs", "0", "at least 1"),
    ("checkpoint.every_secs", "-1", "0 (off) or positive"),
    ("train.max_steps", "0", "-1 (no cap) or positive"),
    ("data.encoding", "utf-9", "codec"),
    ("task", "translate", "'lm' or 'sine'"),
])
def test_bad_values_are_one_line_before_any_directory(tmp_path, key, value, expected):
    run = tmp_path / "run"
    rc, _, err = rnnjax("train", "--workdir", str(run), f"--config.{key}={value}")
    line = one_line_error(err)
    assert rc == 2 and f"'{key}'" in line and expected in line
    assert not run.exists()


def test_config_file_and_command_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from rnnjax.config import defaults\ndef get_config(preset=None):\n"
                   "    c = defaults()\n    c.model.hidden_size = 'wide'\n    return c\n")
    rc, _, err = rnnjax("train", "--config", str(bad), "--workdir", str(tmp_path / "a"))
    assert rc == 2 and "line 4" in one_line_error(err) and not (tmp_path / "a").exists()
    rc, _, err = rnnjax("train", "--config", "quickstart:small", "--workdir", str(tmp_path / "b"))
    assert rc == 2 and "has no presets; drop ':small'" in one_line_error(err)
    rc, _, err = rnnjax("eval", "--workdir", str(tmp_path), "--config.model.cell=gru")
    assert rc == 2 and "eval takes no --config.KEY=VALUE overrides" in err
    sweep = tmp_path / "grid.py"
    sweep.write_text("from rnnjax.config import defaults\nfrom rnnjax.sweep import sweep\n"
                     "def get_config(preset=None):\n    return defaults()\n"
                     "def get_sweep():\n    return sweep('config.model.cell', ['lstm', 'lstmm'])\n")
    rc, _, err = rnnjax("sweep", "--config", str(sweep), "--workdir", str(tmp_path / "s"), "--dry-run")
    assert rc == 2 and "'model.cell' = 'lstmm'" in one_line_error(err) and not (tmp_path / "s").exists()


# ---- the environment ---------------------------------------------------------------------------

def test_environment_faults_are_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    rc, _, err = rnnjax("train", "--workdir", str(tmp_path / "afile"))
    assert rc == 2 and "is a file, not a directory" in one_line_error(err)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": {"cell": "gr')
    rc, _, err = rnnjax("train", "--workdir", str(run))
    assert rc == 2 and "config.json: cannot read the run's config" in one_line_error(err)
    rc, _, err = rnnjax("data", "fetch", "ptb", "--data-dir", str(tmp_path / "d"), "--mirror", "mirror.example/x")
    assert rc == 2 and "expected a URL starting with https://" in one_line_error(err)
    rc, _, err = rnnjax("train", "--workdir", str(tmp_path / "huge"), "--config.model.hidden_size=2000000",
                        "--config.model.embed_size=8")
    assert rc == 2 and "memory" in one_line_error(err)


def test_a_full_disk_is_one_line_naming_the_last_checkpoint_and_the_run_continues(tmp_path):
    run = tmp_path / "run"
    longer = flags(**{"data.synthetic_train_tokens": 20000, "checkpoint.every_steps": 20})  # 3 epochs, 747 steps
    rc, _, err = rnnjax("train", "--workdir", str(run), *longer, max_file_kb=20)  # metrics.jsonl fills 20 KB first
    line = one_line_error(err)
    assert rc == 2 and "cannot write: a file reached its size limit" in line, line
    step = int(line.split("the last complete checkpoint is step ")[1].split()[0])
    assert step > 0 and step in checkpoint.saved_steps(run)
    rc, out, err = rnnjax("train", "--workdir", str(run), *longer)
    assert rc == 0 and f"step {step:,}" in out, out + err
    assert json.loads((run / "summary.json").read_text())["steps"] == 747


def test_a_damaged_token_cache_is_rebuilt(tmp_path, monkeypatch):
    from rnnjax.data import load_corpus

    monkeypatch.setenv("RNNJAX_TOKEN_CACHE", str(tmp_path / "cache"))
    config = config_lib.apply_overrides(config_lib.defaults(), {"data.corpus": "text:" + str(REPO / "README.md")})
    first = load_corpus(config, tmp_path)
    for f in (tmp_path / "cache").rglob("train.npy"):
        f.write_bytes(b"\x93NUMPY broken")
    again = load_corpus(config, tmp_path)
    assert (again.splits["train"] == first.splits["train"]).all()


def test_files_follow_the_umask(tmp_path):
    run = tmp_path / "run"
    assert rnnjax("train", "--workdir", str(run), *flags(**{"train.max_steps": 2}), umask=0o027)[0] == 0
    for name in ("config.json", "vocab.json", "metrics.jsonl", "summary.json"):
        assert stat.S_IMODE((run / name).stat().st_mode) == 0o640, name


def test_a_checkpoint_is_due_by_wall_time(tmp_path):
    config = config_lib.apply_overrides(config_lib.defaults(), {"checkpoint.every_secs": "1"})
    with checkpoint.Checkpoints(tmp_path, config, log=lambda _: None) as ckpts:
        assert ckpts.due(1)  # the first step of a run always has one
        ckpts.save(1, {"w": 1.0}, {"step": 1}, {"step": 1})
        ckpts.wait()
        assert not ckpts.due(2)
        time.sleep(1.1)
        assert ckpts.due(3)
    off = config_lib.apply_overrides(config, {"checkpoint.every_secs": "0"})
    with checkpoint.Checkpoints(tmp_path / "off", off, log=lambda _: None) as ckpts:
        assert not ckpts.due(1)


def test_open_run_refuses_a_new_directory_without_a_config(tmp_path):
    with pytest.raises(RunDirError, match="holds no run to continue"):
        rundir.open_run(tmp_path / "empty", None)
    assert not (tmp_path / "empty").exists()
