"""rnnjax report: rows, grouped tables (95% intervals over seeds, bits per character, divergence, time to
target, anchors' verdicts, comparisons) and plots from run dirs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from rnnjax import cli, config as config_lib, report, results, stats
from rnnjax.errors import DataError
from rnnjax.files import write_json_atomic


def make_run(root: Path, name: str, cell: str, layers: int, seed: int, test_loss: float, level: str = "word",
             status: str | None = None) -> Path:
    """A run directory as `rnnjax train` leaves it, with made-up figures."""
    d = root / name
    config = config_lib.defaults()
    config.model.cell, config.model.num_layers, config.seed = cell, layers, seed
    write_json_atomic(d / "config.json", config.to_dict())
    if status:
        write_json_atomic(d / "status.json", {"status": status, "error": "rnnjax: error: boom"})
        return d
    with open(d / "metrics.jsonl", "w") as f:
        for step, loss in ((10, test_loss + 1.0), (20, test_loss + 0.5)):
            f.write(json.dumps({"step": step, "split": "train", "loss": loss, "perplexity": math.exp(loss)}) + "\n")
            f.write(json.dumps({"step": step, "split": "valid", "loss": loss, "perplexity": math.exp(loss)}) + "\n")
        f.write(json.dumps({"step": 20, "split": "valid", "loss": test_loss + 0.4}) + "\n")  # resumed: logged twice
        f.write('{"step": 30, "split": "tra')  # torn last line of a killed run
    write_json_atomic(d / "summary.json", {
        "valid_ppl": math.exp(test_loss + 0.1), "test_ppl": math.exp(test_loss), "best_valid_ppl": math.exp(test_loss),
        "valid_loss": test_loss + 0.1, "test_loss": test_loss, "steps": 20, "epochs": 0.5, "tokens_per_s": 1000.0,
        "num_params": 1234, "wall_s": 12.0, "corpus": "ptb_char" if level == "char" else "ptb", "level": level})
    return d


def build(root: Path, level: str = "word") -> dict:
    losses = {}
    for cell in ("gru", "lstm"):
        for seed in (0, 1, 2):
            loss = 1.0 + (0.1 if cell == "gru" else 0.0) + 0.01 * seed
            losses[(cell, seed)] = loss
            make_run(root, f"cell={cell},layers=2,seed={seed}", cell, 2, seed, loss, level)
    make_run(root, "cell=rnn_tanh,layers=2,seed=0", "rnn_tanh", 2, 0, 0.0, level, status="failed")
    return losses


def test_rows_and_grouped_table_with_seeds(tmp_path):
    losses = build(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 7
    done = [r for r in rows if r["status"] == "done"]
    assert {r["model.cell"] for r in done} == {"gru", "lstm"} and all("seed" in r for r in rows)
    assert all(r["test_bpc"] is None for r in done)  # word level: no bits per character
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed == [{"run": "cell=rnn_tanh,layers=2,seed=0", "model.cell": "rnn_tanh", "seed": 0,
                       "hidden_size": 200, "status": "failed", "error": "rnnjax: error: boom", "diverged": False}]
    md = (tmp_path / "results.md").read_text()
    gru = [math.exp(losses[("gru", s)]) for s in range(3)]
    line = next(ln for ln in md.splitlines() if ln.startswith("| gru "))
    half = stats.t_quantile(0.975, 2) * statistics.stdev(gru) / math.sqrt(3)  # test ppl: 95% interval
    assert f"{statistics.mean(gru):.2f} ± {half:.2f}" in line and "| 3 |" in line
    assert f"| {statistics.mean(gru):.2f} ± {statistics.stdev(gru):.2f} |" in line  # best valid: mean ± std
    assert "| cell | hidden | params |" in md and "seeds" in md and "layers" not in md.split("|---")[0]
    assert "`cell=rnn_tanh,layers=2,seed=0`: failed: rnnjax: error: boom" in md
    for png in ("valid_curves.png", "test_by_cell.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_char_corpus_reports_bits_per_character(tmp_path):
    losses = build(tmp_path, level="char")
    out = tmp_path / "out"
    report.write_report(tmp_path, out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    lstm0 = next(r for r in rows if r["run"] == "cell=lstm,layers=2,seed=0")
    assert lstm0["test_bpc"] == losses[("lstm", 0)] / math.log(2)
    md = (out / "results.md").read_text()
    assert "| test bpc (95% CI) |" in md
    lstm = [losses[("lstm", s)] / math.log(2) for s in range(3)]
    half = stats.t_quantile(0.975, 2) * statistics.stdev(lstm) / math.sqrt(3)
    assert f"{statistics.mean(lstm):.3f} ± {half:.3f}" in md
    assert "## Time to target: valid bpc ≤" in md
    assert "| best valid bpc | test nats | test bpc (95% CI) |" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| lstm "))
    nats = [losses[("lstm", s)] for s in range(3)]
    assert f"| {statistics.mean(nats):.3f} ± {statistics.stdev(nats):.3f} |" in line  # test nats: mean ± std
    assert lstm0["best_valid_bpc"] == math.log(math.exp(losses[("lstm", 0)])) / math.log(2)


def test_a_run_tested_at_its_best_checkpoint_reports_that_checkpoint_s_validation(tmp_path):
    """Early stopping (`test_step` in the summary): valid figures are the best ones, not the last evaluation's."""
    d = make_run(tmp_path, "cell=lstm,seed=0", "lstm", 2, 0, 1.0, level="char")
    summary = json.loads((d / "summary.json").read_text())
    write_json_atomic(d / "summary.json", {**summary, "test_step": 20, "best_valid_ppl": math.exp(1.05)})
    row = results.collect(tmp_path)[0]
    assert row["valid_ppl"] == math.exp(1.05) and math.isclose(row["valid_loss"], 1.05)
    assert math.isclose(row["valid_bpc"], 1.05 / math.log(2)) and row["valid_bpc"] == row["best_valid_bpc"]
    no_step = make_run(tmp_path / "plain", "cell=lstm,seed=0", "lstm", 2, 0, 1.0, level="char")
    assert results.collect(no_step.parent)[0]["valid_loss"] == 1.1  # the final model's, as the summary says


def test_sweep_file_sets_keys_and_order(tmp_path):
    build(tmp_path)
    names = ["cell=lstm,layers=2,seed=1", "cell=gru,layers=2,seed=0"]
    write_json_atomic(tmp_path / "sweep.json", {"keys": ["model.cell", "model.num_layers", "seed"],
                                                "points": [{"name": n} for n in names]})
    rows = results.collect(tmp_path)
    assert [r["run"] for r in rows[:2]] == names
    assert all("model.num_layers" in r for r in rows)
    assert "| cell | layers | hidden |" in report.markdown(rows, ["model.cell", "model.num_layers", "seed"], "t")


def test_single_seed_table_has_plain_numbers(tmp_path):
    make_run(tmp_path, "cell=gru", "gru", 1, 0, 2.0)
    make_run(tmp_path, "cell=lstm", "lstm", 1, 0, 1.5)
    report.write_report(tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "±" not in md and "seeds" not in md
    assert f"| {math.exp(1.5):.2f} |" in md


def test_report_of_a_directory_without_runs_is_a_one_line_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnjax: error:") and "no run directories" in err and err.count("\n") == 1


def test_report_reads_any_set_of_run_directories(tmp_path, capsys):
    """Word and char LM runs, small tasks, failed, running and damaged points, a directory of
    notes: one table, every unreadable run marked, no crash."""
    make_run(tmp_path, "cell=lstm,layers=2,seed=0", "lstm", 2, 0, 1.0)
    make_run(tmp_path, "char", "gru", 2, 0, 0.7, level="char")
    make_run(tmp_path, "failed", "rnn_tanh", 1, 0, 0.0, status="failed")
    echo = tmp_path / "echo"
    write_json_atomic(echo / "config.json", {"task": "echo"})
    write_json_atomic(echo / "summary.json", {"task": "echo", "metric": "test_accuracy", "goal": "max",
                                              "test_accuracy": 0.99, "steps": 10, "epochs": 1.0,
                                              "num_params": 50, "wall_s": 1.0})
    legacy = tmp_path / "sine"  # a summary from before the one schema: no task, metric or goal
    write_json_atomic(legacy / "config.json", {"task": "sine"})
    write_json_atomic(legacy / "summary.json", {"test_mse": 5e-7, "num_params": 9, "wall_s": 2.0})
    blown = tmp_path / "sine_nan"  # another task's non-finite headline metric: diverged
    write_json_atomic(blown / "config.json", {"task": "sine"})
    write_json_atomic(blown / "summary.json", {"task": "sine", "metric": "test_mse", "goal": "min",
                                               "test_mse": float("nan"), "num_params": 9, "wall_s": 2.0})
    damaged = make_run(tmp_path, "damaged", "gru", 1, 1, 1.0)
    (damaged / "summary.json").write_text('{"test_ppl": 3')
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a run")
    assert cli.main(["report", str(tmp_path)]) == 0
    rows = {r["run"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert "notes" not in rows
    assert rows["damaged"]["status"] == "damaged" and "unreadable" in rows["damaged"]["error"]
    assert rows["failed"]["status"] == "failed"
    assert rows["echo"]["metric"] == "test_accuracy" and rows["echo"]["goal"] == "max"
    assert rows["sine"]["metric"] == "test_mse" and rows["sine"]["value"] == 5e-7 and rows["sine"]["task"] == "sine"
    assert rows["sine_nan"]["diverged"] and not rows["sine"]["diverged"] and not rows["echo"]["diverged"]
    assert abs(rows["char"]["test_bpc"] - 0.7 / math.log(2)) < 1e-12
    md = (tmp_path / "results.md").read_text()
    assert "`damaged`: damaged" in md and "`failed`: failed" in md


# ---- a converged-benchmark sweep: 3 cells x 3 seeds, curves with wall_s, vocabularies, diverged runs ----

VOCAB = 1000
BENCH = {  # cell -> per seed: (validation perplexity every 100 steps, test perplexity or "nan")
    "lstm": [([400, 200, 130, 120], 114.2), ([400, 200, 130, 120], 114.6), ([400, 200, 130, 120], 115.0)],
    "gru": [([350, 180, 125, 120], 115.0), ([350, 180, 125, 120], 116.2), ([350, 180, 125, 120], 114.0)],
    "rnn_tanh": [([600, 400, 300, 280], 270.0),
                 ([600, 450, 5000, 5000], 5000.0),  # finished, worse than uniform over 1000 words: diverged
                 ([600, 500], None)],  # failed on a non-finite loss: diverged
}


def make_bench_run(root: Path, cell: str, seed: int, valid_ppls: list[float], test_ppl: float | None,
                   tokens_per_s: float) -> Path:
    """A word-level run as `rnnjax train` leaves it: one evaluation every 100 steps, 2 s apart."""
    d = root / f"cell={cell},seed={seed}"
    config = config_lib.defaults()  # batch 20 x seq_len 20: 400 training tokens per step
    config.model.cell, config.seed = cell, seed
    write_json_atomic(d / "config.json", config.to_dict())
    write_json_atomic(d / "vocab.json", [f"w{i}" for i in range(VOCAB)])
    with open(d / "metrics.jsonl", "w") as f:
        for i, ppl in enumerate(valid_ppls, start=1):
            f.write(json.dumps({"step": 100 * i, "epoch": i / 10, "split": "train", "loss": math.log(ppl) + 0.1,
                                "tokens_per_s": tokens_per_s}) + "\n")
            f.write(json.dumps({"step": 100 * i, "epoch": i / 10, "split": "valid", "loss": math.log(ppl),
                                "perplexity": ppl, "wall_s": 2.0 * i}) + "\n")
    if test_ppl is None:
        write_json_atomic(d / "status.json", {"status": "failed", "error": "rnnjax: error: non-finite loss or "
                                              "gradient at epoch 0.25 (step 250); stopped", "returncode": 3})
        return d
    write_json_atomic(d / "summary.json", {
        "task": "lm", "metric": "test_ppl", "goal": "min", "steps": 100 * len(valid_ppls), "epochs": 0.4,
        "num_params": {"lstm": 4000, "gru": 3000}.get(cell, 1000), "wall_s": 2.0 * len(valid_ppls) + 1,
        "tokens_per_s": tokens_per_s, "valid_ppl": valid_ppls[-1], "test_ppl": test_ppl,
        "best_valid_ppl": min(valid_ppls), "valid_loss": math.log(valid_ppls[-1]), "test_loss": math.log(test_ppl),
        "corpus": "ptb", "level": "word"})
    return d


def build_bench(root: Path, anchors: str | None = None) -> None:
    for cell, seeds in BENCH.items():
        for seed, (curve, test) in enumerate(seeds):
            make_bench_run(root, cell, seed, curve, test, {"lstm": 900.0, "gru": 1100.0, "rnn_tanh": 2000.0}[cell])
    sweep = {"keys": ["model.cell", "seed"], "points": [{"name": p.name} for p in sorted(root.iterdir())]}
    if anchors is not None:
        config = root / "bench_config.py"
        config.write_text(f"ANCHORS = {anchors}\n")
        sweep["config"] = str(config)
    write_json_atomic(root / "sweep.json", sweep)


def _line(md: str, cell: str) -> str:
    return next(ln for ln in md.splitlines() if ln.startswith(f"| {cell} |"))


def test_benchmark_table_intervals_divergence_and_verdicts(tmp_path):
    build_bench(tmp_path, anchors='{"cell=lstm": "zaremba_small", "cell=rnn_tanh": "zaremba_small"}')
    assert cli.main(["report", str(tmp_path), "--anchor", "cell=gru=zaremba_medium",
                     "--anchor", "cell=rnn_tanh=gal_large"]) == 0
    rows = {r["run"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert rows["cell=rnn_tanh,seed=1"]["diverged"] and rows["cell=rnn_tanh,seed=1"]["status"] == "done"
    assert rows["cell=rnn_tanh,seed=2"]["diverged"] and rows["cell=rnn_tanh,seed=2"]["status"] == "failed"
    assert not rows["cell=lstm,seed=0"]["diverged"] and rows["cell=lstm,seed=0"]["vocab_size"] == VOCAB
    md = (tmp_path / "results.md").read_text()
    assert "9 runs: 8 finished, 1 failed, 0 unfinished; 2 diverged" in md
    assert "| cell | hidden | params | best valid ppl | test ppl (95% CI) | seeds | diverged | steps | tokens/s | " \
           "wall | vs published |" in md
    lstm = [114.2, 114.6, 115.0]
    half = 4.302653 * statistics.stdev(lstm) / math.sqrt(3)
    line = _line(md, "lstm")
    assert f"| {statistics.mean(lstm):.2f} ± {half:.2f} | 3 | 0 |" in line
    assert "| zaremba_small: reproduced (test 114.6 vs 114.5 ± 2%, valid 120.0 vs 120.7 ± 2%) |" in line
    assert "| zaremba_medium: not reproduced: test 115.1 vs 82.7 ± 2%, valid 120.0 vs 86.2 ± 2% |" in _line(md, "gru")
    tanh = _line(md, "rnn_tanh")  # one run averaged, two diverged; the flag overrides the config's ANCHORS
    assert "| 270.00 (n=1) | 1 | 2 of 3 |" in tanh and "| 2,000 |" in tanh
    assert "gal_large: not reproduced: 270.0 vs 75.2 ± 2%" in tanh
    assert "- `zaremba_small` (ptb, test_ppl 114.5, valid_ppl 120.7, ± 2%): Zaremba" in md
    gru_ci = stats.interval([115.0, 116.2, 114.0])
    assert (f"- lstm ({statistics.mean(lstm):.2f} ± {half:.2f}) and gru ({gru_ci.mean:.2f} ± {gru_ci.half:.2f}) "
            f"differ by {gru_ci.mean - statistics.mean(lstm):.2f} ppl, within the 95% intervals (they overlap).") in md
    assert f"- gru ({gru_ci.mean:.2f} ± {gru_ci.half:.2f}) and rnn_tanh (270.00, n=1) differ by " \
           f"{270 - gru_ci.mean:.2f} ppl; a group with one run has no interval to compare." in md


def test_comparison_sentence_when_intervals_do_not_overlap(tmp_path):
    for seed, test in enumerate((100.0, 101.0, 102.0)):
        make_bench_run(tmp_path, "lstm", seed, [300, 150], test, 1000.0)
        make_bench_run(tmp_path, "gru", seed, [300, 160], test + 20, 1000.0)
    md = (tmp_path / "results.md").read_text() if report.write_report(tmp_path) else ""
    assert "- lstm is lower than gru by 20.00 ppl (101.00 vs 121.00); the 95% intervals do not overlap." in md


def test_time_to_target_default_and_flag(tmp_path):
    build_bench(tmp_path)
    report.write_report(tmp_path)
    md = (tmp_path / "results.md").read_text()
    # Default: the worst best-validation value of a non-diverged run (rnn_tanh seed 0: 280).
    assert "## Time to target: valid ppl ≤ 280.00" in md and "(the default:" in md
    assert "| cell | tokens to valid ppl ≤ 280.00 | seconds to valid ppl ≤ 280.00 |" in md
    assert "| lstm | 80,000 | 4 s |" in md  # step 200 x 400 tokens per step, wall_s 4
    assert "| rnn_tanh | not reached by 2 of 3 | not reached by 2 of 3 |" in md
    assert cli.main(["report", str(tmp_path), "--target", "125"]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "## Time to target: valid ppl ≤ 125.00" in md and "set by `--target`" in md
    assert "| lstm | 160,000 | 8 s |" in md and "| gru | 120,000 | 6 s |" in md
    assert "| rnn_tanh | not reached by 3 of 3 |" in md


def test_plots_for_a_two_cell_three_seed_sweep(tmp_path):
    for cell in ("gru", "lstm"):
        for seed, (curve, test) in enumerate(BENCH[cell]):
            make_bench_run(tmp_path, cell, seed, [v + 3 * seed for v in curve], test, 1000.0 + 100 * seed)
    written = report.write_report(tmp_path, tmp_path / "out")
    names = [p.name for p in written]
    assert names == ["results.jsonl", "results.md", "valid_curves.png", "test_by_cell.png", "test_vs_throughput.png"]
    for png in names[2:]:
        data = (tmp_path / "out" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000, (png, len(data))


def test_a_numeric_swept_key_gets_a_plot_of_the_test_metric_against_it(tmp_path):
    for cell in ("gru", "lstm"):
        for layers in (1, 2, 3):
            for seed in (0, 1):
                make_run(tmp_path, f"cell={cell},layers={layers},seed={seed}", cell, layers, seed,
                         1.0 + 0.1 * layers + 0.01 * seed)
    written = [p.name for p in report.write_report(tmp_path)]
    assert written[-1] == "test_vs_layers.png" and "test_vs_seed.png" not in written
    data = (tmp_path / "test_vs_layers.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 15_000


@pytest.mark.parametrize("values, numeric", [
    ({"model.num_layers": [1, 2]}, ["model.num_layers"]),
    ({"model.dropout": [0.0, 0.3], "train.learning_rate": [1.0, 1.0]}, ["model.dropout"]),  # one value: no axis
    ({"model.tie_weights": [False, True]}, []),  # booleans are not an axis
    ({"model.embed_size": [None, 64]}, []),
])
def test_numeric_keys(values, numeric):
    keys = ["model.cell", *values, "seed"]
    groups = [report.Group({"model.cell": "gru", **{k: v[i] for k, v in values.items()}}, [], []) for i in range(2)]
    assert report.numeric_keys(groups, keys) == numeric


def test_a_key_set_once_per_cell_is_not_an_axis():
    """Each cell at its own chosen learning rate: a plot against the rate would have one point per line."""
    keys = ["model.cell", "train.learning_rate", "seed"]
    groups = [report.Group({"model.cell": c, "train.learning_rate": lr}, [], []) for c, lr in (("lstm", 1.0), ("gru", 0.5))]
    assert report.numeric_keys(groups, keys) == []
    groups.append(report.Group({"model.cell": "gru", "train.learning_rate": 1.0}, [], []))
    assert report.numeric_keys(groups, keys) == ["train.learning_rate"]


def test_bad_anchor_flags_are_one_line_errors(tmp_path, capsys):
    build_bench(tmp_path)
    assert cli.main(["report", str(tmp_path), "--anchor", "cell=lstm=no_such_paper"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnjax: error: unknown anchor 'no_such_paper'; known: zaremba_small")
    assert err.count("\n") == 1
    with pytest.raises(DataError, match="'layers' is not a swept key"):
        report.write_report(tmp_path, anchor_flags=["layers=2=zaremba_small"])
    with pytest.raises(DataError, match="--target needs"):
        make_run(tmp_path / "mixed", "a", "lstm", 1, 0, 1.0)
        make_run(tmp_path / "mixed", "b", "gru", 1, 0, 1.0, level="char")
        report.write_report(tmp_path / "mixed", target=3.0)


def test_a_key_zipped_with_the_cell_goes_with_its_name_in_comparisons(tmp_path):
    """Each cell at its own value of another key (its chosen learning rate, say) is still compared."""
    for seed in (0, 1, 2):
        make_run(tmp_path, f"cell=lstm,layers=2,seed={seed}", "lstm", 2, seed, 1.0 + 0.01 * seed)
        make_run(tmp_path, f"cell=gru,layers=1,seed={seed}", "gru", 1, seed, 1.5 + 0.01 * seed)
    md = (tmp_path / "results.md").read_text() if report.write_report(tmp_path) else ""
    assert "- lstm (layers=2) is lower than gru (layers=1) by" in md, md


def test_report_on_one_run_prints_its_summary_and_writes_its_curves(tmp_path, capsys):
    run = make_run(tmp_path, "one", "lstm", 2, 0, 1.5)
    assert cli.main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.index("\nwrote ")])["test_ppl"] == pytest.approx(math.exp(1.5))
    assert (run / "curves.png").stat().st_size > 0 and not (run / "results.md").exists()
    assert cli.main(["report", str(run), "--target", "3"]) == 2
    assert "one run's directory" in capsys.readouterr().err
    unfinished = make_run(tmp_path, "two", "gru", 2, 0, 1.5, status="running")
    assert cli.main(["report", str(unfinished)]) == 0
    assert "unfinished" in capsys.readouterr().out


def test_report_on_a_sweep_prints_its_table(tmp_path, capsys):
    build(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith((tmp_path / "results.md").read_text())
