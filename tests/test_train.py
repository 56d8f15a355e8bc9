"""Training end to end on the synthetic corpus: determinism, CLI, run files, schedules."""

from __future__ import annotations

import json
import math
import re

import jax
import numpy as np
import optax
import pytest

from rnnjax import batching, optim
from rnnjax.data import synthetic
from rnnjax.loop import stalled
from rnnjax.cli import main
from rnnjax.config import resolve as resolve_config
from rnnjax.model import make_lm
from rnnjax.records import read_metrics
from rnnjax.report_plots import plotted_at

TINY = {"train.max_steps": "30", "model.hidden_size": "16", "model.embed_size": "8", "train.log_every": "10",
        "data.synthetic_train_tokens": "20000", "data.synthetic_eval_tokens": "2000", "train.batch_size": "8",
        "train.seq_len": "10", "eval.seq_len": "100"}


def run(tmp_path, name, **extra):
    args = ["train", "--workdir", str(tmp_path / name)]
    args += [f"--config.{k}={v}" for k, v in {**TINY, **extra}.items()]
    assert main(args) == 0
    return tmp_path / name


def train_losses(workdir):
    return [r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "train"]


def test_run_files_and_same_seed_bit_identical(tmp_path, capsys):
    a = run(tmp_path, "a", **{"model.dropout": "0.3"})
    b = run(tmp_path, "b", **{"model.dropout": "0.3"})
    out = capsys.readouterr().out
    assert "source floor ppl" in out and "valid ppl" in out
    assert f"next: rnnjax eval --workdir {a} " in out and f"rnnjax sample --workdir {a} --prime TEXT" in out
    summary = json.loads((a / "summary.json").read_text())
    for key in ("valid_ppl", "test_ppl", "steps", "tokens_per_s", "num_params", "wall_s", "jax_version",
                "device_kind", "floor_ppl"):
        assert key in summary
    assert summary["steps"] == 30
    assert json.loads((a / "config.json").read_text())["train"]["max_steps"] == 30
    assert len(json.loads((a / "vocab.json").read_text())) == 24
    records = list(read_metrics(a / "metrics.jsonl"))
    train_rec = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_rec] == [10, 20, 30]
    assert {"loss", "perplexity", "tokens_per_s", "lr", "grad_norm"} <= set(train_rec[0])
    assert train_losses(a) == train_losses(b)
    assert json.loads((b / "summary.json").read_text())["test_ppl"] == summary["test_ppl"]
    c = run(tmp_path, "c", **{"model.dropout": "0.3", "seed": "1"})
    assert train_losses(c) != train_losses(a)


def test_quickstart_learns_toward_the_floor(tmp_path):
    w = run(tmp_path, "q", **{"train.max_steps": "150", "model.hidden_size": "32", "train.learning_rate": "0.01",
                              "train.schedule": "constant", "data.synthetic_train_tokens": "60000"})
    s = json.loads((w / "summary.json").read_text())
    assert s["floor_ppl"] < s["valid_ppl"] < 0.5 * 24  # far below a uniform guess over 24 symbols


def test_eval_scores_every_token_and_matches_batch_layouts():
    config = resolve_config("quickstart", {"model.hidden_size": "8", "model.embed_size": "4", "eval.batch_size": "1"})
    lm = make_lm(config, 24)
    params = lm.init(jax.random.key(0))
    ids = synthetic.sample(synthetic.make_source(0, 24, 3), 1001, 0)
    from rnnjax.steps import evaluate, make_eval_step

    step = make_eval_step(lm)
    one = evaluate(lm, step, params, ids, config)
    chunked = evaluate(lm, step, params, ids, resolve_config("quickstart", {"model.hidden_size": "8",
                       "model.embed_size": "4", "eval.batch_size": "1", "eval.seq_len": "77"}))
    assert one == pytest.approx(chunked, rel=1e-5)
    # Reference: one pass over the whole stream at once.
    carries, logits = lm.apply(params, lm.initial_carry(1), ids[None, :-1])
    ref = optax.softmax_cross_entropy_with_integer_labels(logits[:, 0], ids[1:]).mean()
    assert one == pytest.approx(float(ref), rel=1e-5)


def test_zaremba_step_schedule():
    config = resolve_config("ptb:small", {})
    sched = optim.schedule(config, steps_per_epoch=10, total_steps=130)
    for epoch in range(13):
        want = 1.0 * 0.5 ** max(epoch + 1 - 4, 0)
        assert float(sched(epoch * 10)) == pytest.approx(want) and float(sched(epoch * 10 + 9)) == pytest.approx(want)


def test_time_sum_loss_scales_the_gradient():
    from rnnjax.steps import init_state, make_train_step

    def grad_norm(time_sum):
        config = resolve_config("quickstart", {"model.hidden_size": "8", "model.embed_size": "4",
                                               "train.clip_norm": "0", "train.optimizer": "sgd",
                                               "train.schedule": "constant", "train.seq_len": "7",
                                               "train.time_sum_loss": str(time_sum)})
        lm = make_lm(config, 24)
        sched = optim.schedule(config, 10, 10)
        opt = optim.optimizer(config, sched)
        step = make_train_step(lm, opt, sched, config)
        ids = np.arange(2000, dtype=np.int32) % 24
        batch = batching.train_batch(ids, config.train.batch_size, 7, "contiguous", 0, 0, 0)
        state = init_state(lm, opt, jax.random.key(0), config.train.batch_size)
        _, metrics = step(state, batching.Batch(*batch), jax.random.key(1))
        return float(metrics["grad_norm"]), float(metrics["loss"])

    (g_sum, l_sum), (g_mean, l_mean) = grad_norm(True), grad_norm(False)
    assert l_sum == pytest.approx(l_mean)
    assert g_sum == pytest.approx(7 * g_mean, rel=1e-4)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path / "x"), "--config.model.cel=gru"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.cell" in err
    assert main(["train", "--config", "ptb:small", "--workdir", str(tmp_path / "y"),
                 "--data-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ptb" in err and "rnnjax data fetch ptb" in err


def test_tied_embeddings_need_matching_sizes(tmp_path, capsys):
    assert main(["train", "--workdir", str(tmp_path / "t"), "--config.model.tie_embeddings=true"]) == 2
    assert "tie_embeddings" in capsys.readouterr().err
    w = run(tmp_path, "tied", **{"model.tie_embeddings": "true", "model.embed_size": "16", "train.max_steps": "5"})
    assert math.isfinite(json.loads((w / "summary.json").read_text())["valid_ppl"])


def test_stalled_counts_evaluations_without_improvement():
    assert not stalled([3.0, 2.0, 2.5], 2, "min")
    assert stalled([3.0, 2.0, 2.5, 2.0], 2, "min")  # equal is not better
    assert not stalled([3.0, 2.0, 2.5, 1.9], 2, "min")
    assert stalled([3.0, 2.0, float("nan"), float("inf")], 2, "min")
    assert stalled([0.5, 0.9, 0.8, 0.9], 2, "max") and not stalled([0.5, 0.9, 0.8, 0.95], 2, "max")
    assert not stalled([3.0, 4.0, 5.0, 6.0], 0, "min")  # patience 0: never
    assert not stalled([3.0, 4.0], 2, "min")  # nothing before the last two


def test_patience_stops_early_and_tests_the_best_checkpoint(tmp_path, capsys):
    """A tiny model overfits 2,000 tokens; it stops once validation stalls, and its test score is
    that of the best-validation step: equal to a run stopped there by max_steps."""
    overfit = {"train.max_steps": "600", "train.num_epochs": "100", "model.hidden_size": "64", "train.optimizer": "adam",
               "train.learning_rate": "0.02", "data.synthetic_train_tokens": "2000",
               "data.synthetic_eval_tokens": "500", "eval.every_steps": "10", "train.log_every": "50",
               "train.schedule": "constant"}  # a cosine schedule would tie the steps to the planned length
    w = run(tmp_path, "early", **overfit, **{"train.patience": "3"})
    assert "early stop at step" in capsys.readouterr().out
    summary = json.loads((w / "summary.json").read_text())
    valid = [r for r in read_metrics(w / "metrics.jsonl") if r["split"] == "valid"]
    ppl = [r["perplexity"] for r in valid]
    assert summary["steps"] < summary["planned_steps"] == 600 and summary["steps"] == valid[-1]["step"]
    assert min(ppl[-3:]) >= min(ppl[:-3])
    best = valid[int(np.argmin(ppl))]
    assert summary["test_step"] == best["step"] and summary["best_valid_ppl"] == best["perplexity"]
    assert math.isclose(summary["valid_ppl"], best["perplexity"], rel_tol=1e-12)  # the tested model's own
    (test,) = [r for r in read_metrics(w / "metrics.jsonl") if r["split"] == "test"]
    assert test["step"] == summary["steps"] and test["checkpoint_step"] == best["step"]
    assert plotted_at(test, "epoch") == pytest.approx(best["epoch"])  # curves.png puts it where it was scored
    cut = run(tmp_path, "cut", **{**overfit, "train.max_steps": str(best["step"])})
    assert json.loads((cut / "summary.json").read_text())["test_ppl"] == summary["test_ppl"]


def test_a_diverged_perplexity_prints_in_scientific_notation():
    from rnnjax.progress import Progress
    from rnnjax.records import perplexity, ppl_text

    assert ppl_text(114.378) == "114.38" and ppl_text(2.436789, 3) == "2.437"
    assert ppl_text(perplexity(1e9)) == "1.01e+304"
    lines = []
    Progress(10, tokens_per_step=1, log=lines.append).report(
        {"step": 1, "epoch": 0.1, "loss": 1e9, "perplexity": perplexity(1e9), "tokens_per_s": 1.0, "lr": 0.1,
         "grad_norm": 1.0})
    assert "ppl 1.01e+304 |" in lines[0] and len(lines[0]) < 200


def test_char_corpora_print_bits_per_character(tmp_path, capsys):
    text = tmp_path / "abc.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    run(tmp_path, "char", **{"data.corpus": f"text:{text}", "train.max_steps": "6"})
    out = capsys.readouterr().out
    assert re.search(r"valid ppl [\d.]+ \([\d.]+ bpc\), test ppl [\d.]+ \([\d.]+ bpc\)", out)
    assert re.search(r"epoch [\d.]+: train ppl [\d.]+ \(epoch mean\), valid ppl [\d.]+ \([\d.]+ bpc\)", out)


def test_tokens_per_s_and_eta_leave_evaluation_time_out(monkeypatch):
    from rnnjax import progress

    clock = [0.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    p = progress.Progress(100, tokens_per_step=10, log=lambda line: None)
    p.update(1)  # the first step (compilation) starts the clock
    clock[0] = 10.0
    p.update(11)  # 10 steps of training in 10 s ...
    clock[0] = 40.0
    p.exclude(30.0)  # ... then 30 s of evaluation
    assert p.tokens_per_s() == 10.0 and p.eta() == 89.0
