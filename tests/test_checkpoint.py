"""Checkpoint contents and policies: config checks on resume, rollback, eval --checkpoint, corrupt dirs."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rnnjax import checkpoint, cli, config as config_lib, loop, rundir, steps
from rnnjax.tasks import lm
from rnnjax.errors import DataError, NonFiniteLoss
from rnnjax.records import JsonlMetrics, read_metrics

import tiny

TINY = {**tiny.LM, "train.optimizer": "sgd", "train.learning_rate": 0.5, "train.schedule": "constant"}


def args(workdir: Path, config: str | None = "quickstart", **overrides) -> list[str]:
    out = ["train", "--workdir", str(workdir)] + (["--config", config] if config else [])
    return out + [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]


def train_records(workdir: Path) -> list[dict]:
    return [r for r in read_metrics(workdir / "metrics.jsonl") if r.get("split") == "train"]


def poison_before(monkeypatch, step: int) -> None:
    """Fault injection: the parameters turn NaN once, just before training step `step`."""
    make, poisoned = steps.make_step, []

    def make_poisoned(*args, **kwargs):
        inner = make(*args, **kwargs)

        def train_step(state, batch, key):
            if not poisoned and int(state.step) + 1 == step:
                poisoned.append(step)
                state = state._replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
            return inner(state, batch, key)

        return train_step

    monkeypatch.setattr(steps, "make_step", make_poisoned)


def test_resume_refuses_model_changes_and_reports_safe_ones(tmp_path, capsys):
    assert cli.main(args(tmp_path, **{"train.max_steps": 6})) == 0
    capsys.readouterr()
    assert cli.main(args(tmp_path, **{"train.max_steps": 6, "model.hidden_size": 32, "train.seq_len": 5})) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rnnjax: error: {tmp_path}: holds a run of another config (differs in "
                          "model.hidden_size, train.seq_len; ")
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 6  # left as it was
    assert len(err.strip().splitlines()) == 1
    assert json.loads((tmp_path / "config.json").read_text())["model"]["hidden_size"] == 16  # not overwritten

    # No --config: the saved config, with the overrides on top (a safe one here).
    assert cli.main(["train", "--workdir", str(tmp_path), "--config.train.max_steps=9"]) == 0
    out = capsys.readouterr().out
    assert "continuing with changed train.max_steps 6 -> 9" in out
    assert json.loads((tmp_path / "summary-step6.json").read_text())["steps"] == 6  # the earlier result, kept
    assert "resuming from the checkpoint at step 6 (epoch 1, batch 6 of 24 done)" in out
    assert [r["step"] for r in train_records(tmp_path)] == list(range(1, 10))
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 9


def test_rollback_on_a_nonfinite_loss_restores_halves_lr_and_logs(tmp_path, monkeypatch):
    config = config_lib.resolve("quickstart", {
        **{k: str(v) for k, v in TINY.items()}, "train.max_steps": "14", "checkpoint.every_steps": "5",
        "train.on_nonfinite": "rollback"})
    logs = []
    poison_before(monkeypatch, 8)
    with rundir.open_run(tmp_path, config) as run:
        summary = loop.train(lm.make(config, run, Path("."), logs.append), config, run, log=logs.append)
    assert math.isfinite(summary["valid_ppl"])
    records = list(read_metrics(tmp_path / "metrics.jsonl"))
    events = [r for r in records if r.get("event") == "rollback"]
    assert events == [{"step": 5, "epoch": 5 / 24, "event": "rollback", "nonfinite_step": 8, "lr_scale": 0.5}]
    assert any("non-finite loss at step 8: rolled back to step 5, learning rate x0.5" in line for line in logs)
    lrs = {r["step"]: r["lr"] for r in train_records(tmp_path)}
    assert list(lrs) == list(range(1, 15))  # steps 6.. were logged once, after the rollback
    assert lrs[5] == 0.5 and lrs[6] == lrs[14] == 0.25
    # The scale lives in the optimizer state, so the checkpoint carries it into a continued run.
    assert cli.main(["train", "--workdir", str(tmp_path), "--config.train.max_steps=16"]) == 0
    assert {r["step"]: r["lr"] for r in train_records(tmp_path)}[16] == 0.25


def test_stop_on_a_nonfinite_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    config = config_lib.resolve("quickstart", {
        **{k: str(v) for k, v in TINY.items()}, "train.max_steps": "14", "checkpoint.every_steps": "5"})
    poison_before(monkeypatch, 8)
    with pytest.raises(NonFiniteLoss, match=r"step 8 .*the last good checkpoint is step 5"):
        with rundir.open_run(tmp_path, config) as run:
            loop.train(lm.make(config, run, Path("."), print), config, run, log=lambda _: None)
    with checkpoint.Checkpoints(tmp_path, config, read_only=True) as ckpts:
        assert ckpts.steps() == [1, 5]  # 1: checkpoint.every_secs


def test_eval_picks_best_latest_or_a_step_and_keep_policies_hold(tmp_path, capsys):
    assert cli.main(args(tmp_path, **{"train.num_epochs": 3, "checkpoint.every_steps": 4, "checkpoint.keep": 2,
                                      "checkpoint.keep_best": 1})) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    valid = {r["step"]: r["perplexity"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "valid"}
    best_step = min(valid, key=valid.get)
    with checkpoint.Checkpoints(tmp_path, config_lib.defaults(), read_only=True) as ckpts:
        steps = ckpts.steps()
    assert steps == sorted({68, 72, best_step})  # the newest two and the best
    capsys.readouterr()
    for which, step in (("best", best_step), ("latest", 72), ("68", 68)):
        assert cli.main(["eval", "--workdir", str(tmp_path), "--split", "valid", "--checkpoint", which]) == 0
        scored = json.loads(capsys.readouterr().out)
        assert scored["checkpoint_step"] == step
        if step in valid:
            assert scored["perplexity"] == valid[step]
    assert valid[best_step] == summary["best_valid_ppl"]
    assert cli.main(["eval", "--workdir", str(tmp_path), "--checkpoint", "7"]) == 2
    assert "--checkpoint '7': expected best, latest or one of the saved steps" in capsys.readouterr().err


def test_all_checkpoints_unreadable_is_an_error_not_a_fresh_start(tmp_path, capsys):
    assert cli.main(args(tmp_path, **{"train.max_steps": 6, "checkpoint.every_steps": 3})) == 0
    (tmp_path / "summary.json").unlink()  # as if killed after the last checkpoint, before the summary
    before = (tmp_path / "metrics.jsonl").read_text()
    for meta in (tmp_path / "checkpoints").glob("*/meta/metadata"):
        meta.write_text(meta.read_text()[:10])
    capsys.readouterr()
    assert cli.main(args(tmp_path, **{"train.max_steps": 6, "checkpoint.every_steps": 3})) == 2
    err = capsys.readouterr().err
    assert "no usable checkpoint; unreadable steps: 1 (meta/metadata: JSONDecodeError" in err
    assert "Move the directory away to start the run over" in err
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_restore_latest_skips_a_checkpoint_whose_arrays_fail(tmp_path, capsys):
    assert cli.main(args(tmp_path, **{"train.max_steps": 6, "checkpoint.every_steps": 3})) == 0
    (tmp_path / "summary.json").unlink()  # as if killed after the last checkpoint, before the summary
    for f in (tmp_path / "checkpoints" / "6" / "train").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(b"")
    capsys.readouterr()
    assert cli.main(args(tmp_path, **{"train.max_steps": 6, "checkpoint.every_steps": 3})) == 0
    out = capsys.readouterr().out
    assert "warning: checkpoint at step 6 is incomplete or corrupt" in out
    assert "resuming from the checkpoint at step 3" in out
    assert (tmp_path / "checkpoints-corrupt" / "6").is_dir()
    assert [r["step"] for r in train_records(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_metrics_log_keep_cuts_to_the_first_records_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = JsonlMetrics(path)
    for step in range(1, 5):
        log.write({"step": step, "loss": 1.0 / step})
    log.close()
    with open(path, "a") as f:
        f.write('{"step": 5, "lo')
    log = JsonlMetrics(path, keep=10)
    assert log.records == 4 and [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]
    log.close()
    log = JsonlMetrics(path, keep=2)
    log.write({"step": 3, "loss": 0.5})
    log.close()
    assert path.read_text() == '{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n{"step": 3, "loss": 0.5}\n'


def test_resume_changes_treat_keys_added_since_as_their_default():
    config = config_lib.defaults()
    saved = config.to_dict()
    del saved["checkpoint"], saved["train"]["on_nonfinite"]
    assert config_lib.resume_changes(config_lib.ConfigDict(saved), config) == ([], [])
    saved["model"]["cell"] = "gru"
    saved["train"]["max_steps"] = 5
    assert config_lib.resume_changes(config_lib.ConfigDict(saved), config) == (
        ["model.cell"], ["train.max_steps 5 -> -1"])
    with pytest.raises(DataError):
        checkpoint.restore_params(Path("/nonexistent"), lambda key: None)


def test_eval_of_a_damaged_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(args(tmp_path, **{"train.max_steps": 6, "checkpoint.every_steps": 3})) == 0
    for f in (tmp_path / "checkpoints" / "6" / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:10])
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "checkpoint at step 6 cannot be read" in err and "--checkpoint STEP" in err
    assert cli.main(["eval", "--workdir", str(tmp_path), "--checkpoint", "3"]) == 0


def test_a_refused_resume_still_closes_the_checkpoint_manager(tmp_path, monkeypatch):
    """An unclosed Orbax manager's threads outlive the run (and warn once its event loop is gone)."""
    config = config_lib.resolve("quickstart", {**{k: str(v) for k, v in TINY.items()}, "train.max_steps": "6"})
    with rundir.open_run(tmp_path, config) as run:
        loop.train(lm.make(config, run, Path("."), print), config, run, log=lambda _: None)
    (tmp_path / "summary.json").unlink(missing_ok=True)
    closed, close = [], checkpoint.Checkpoints.close
    monkeypatch.setattr(checkpoint.Checkpoints, "close", lambda self: (closed.append(self), close(self)))
    longer = config_lib.apply_overrides(config, {"train.max_steps": "8"})
    with pytest.raises(DataError, match="the checkpoint's vocab differs"):
        with rundir.open_run(tmp_path, longer) as run:
            task = lm.make(longer, run, Path("."), print)
            loop.train(task._replace(identity={"vocab": ["another"]}), longer, run, log=lambda _: None)
    assert len(closed) == 1


def test_late_reads_after_a_failed_restore_are_dropped_and_other_unraisables_pass(monkeypatch):
    import sys
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    checkpoint._quiet_late_reads()
    checkpoint._quiet_late_reads()  # installed once, not stacked
    hook = sys.unraisablehook
    assert isinstance(hook, checkpoint._DropLateReads) and hook.previous == seen.append

    class Unraisable:
        def __init__(self, exc, obj=None):
            self.exc_value, self.object = exc, obj

    hook(Unraisable(RuntimeError("Event loop is closed")))
    other = [Unraisable(RuntimeError("boom")), Unraisable(ValueError("Event loop is closed")),
             Unraisable(RuntimeError("Event loop is closed"), obj="a destructor")]
    for u in other:
        hook(u)
    assert seen == other


def as_format_1(workdir: Path, step: int) -> None:
    """Rewrite checkpoint `step` as rnnjax saved it before `params_format`: decoder.w and the
    optimizer's moments of it [H, V], no params_format in the meta."""
    root = (workdir / checkpoint.CHECKPOINTS).absolute()
    with ocp.CheckpointManager(root) as mngr:
        out = mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(), train=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))

    def old(path, x):
        return x.T if [getattr(k, "key", None) for k in path[-2:]] == ["decoder", "w"] else x

    params, train = (jax.tree_util.tree_map_with_path(old, out[k]) for k in ("params", "train"))
    meta = {k: v for k, v in out["meta"].items() if k != "params_format"}
    shutil.rmtree(root / str(step))
    with ocp.CheckpointManager(root) as mngr:
        mngr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                train=ocp.args.StandardSave(train),
                                                meta=ocp.args.JsonSave(meta)))
        mngr.wait_until_finished()


def test_a_checkpoint_from_before_params_format_evaluates_and_resumes_as_saved(tmp_path, capsys):
    """Format 1 restores transposed: eval reads the same model, the resumed run matches an
    uninterrupted one step for step, and its new saves are today's format."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    untied = {"model.tie_embeddings": False, "train.optimizer": "adam", "train.learning_rate": 0.01}
    assert cli.main(args(whole, **untied, **{"train.max_steps": 6})) == 0
    assert cli.main(args(cut, **untied, **{"train.max_steps": 3})) == 0
    capsys.readouterr()
    assert cli.main(["eval", "--workdir", str(cut)]) == 0
    before = capsys.readouterr().out
    as_format_1(cut, 3)
    assert cli.main(["eval", "--workdir", str(cut)]) == 0
    assert capsys.readouterr().out == before
    assert cli.main(args(cut, **untied, **{"train.max_steps": 6})) == 0
    assert [r["loss"] for r in train_records(cut)] == [r["loss"] for r in train_records(whole)]
    meta = json.loads((cut / checkpoint.CHECKPOINTS / "6" / "meta" / "metadata").read_text())
    assert meta["params_format"] == checkpoint.PARAMS_FORMAT


def test_a_checkpoint_of_a_newer_params_format_is_refused_in_one_line_and_kept(tmp_path, capsys):
    assert cli.main(args(tmp_path, **{"train.max_steps": 3})) == 0
    path = tmp_path / checkpoint.CHECKPOINTS / "3" / "meta" / "metadata"
    path.write_text(json.dumps({**json.loads(path.read_text()), "params_format": checkpoint.PARAMS_FORMAT + 1}))
    capsys.readouterr()
    for argv in (args(tmp_path, **{"train.max_steps": 6}), ["eval", "--workdir", str(tmp_path)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"params_format {checkpoint.PARAMS_FORMAT + 1}, written by a newer" in err
    assert (tmp_path / checkpoint.CHECKPOINTS / "3").is_dir() and not (tmp_path / checkpoint.CORRUPT).exists()
