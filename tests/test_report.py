"""rnnjax report: rows, grouped tables (mean ± std over seeds, bits per character) and plots from run dirs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from rnnjax import cli, config as config_lib, report
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
                       "hidden_size": 200, "status": "failed", "error": "rnnjax: error: boom"}]
    md = (tmp_path / "results.md").read_text()
    gru = [math.exp(losses[("gru", s)]) for s in range(3)]
    line = next(ln for ln in md.splitlines() if ln.startswith("| gru "))
    assert f"{statistics.mean(gru):.2f} ± {statistics.stdev(gru):.2f}" in line and "| 3 |" in line
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
    assert "| test bpc |" in md
    lstm = [losses[("lstm", s)] / math.log(2) for s in range(3)]
    assert f"{statistics.mean(lstm):.3f} ± {statistics.stdev(lstm):.3f}" in md


def test_sweep_file_sets_keys_and_order(tmp_path):
    build(tmp_path)
    names = ["cell=lstm,layers=2,seed=1", "cell=gru,layers=2,seed=0"]
    write_json_atomic(tmp_path / "sweep.json", {"keys": ["model.cell", "model.num_layers", "seed"],
                                                "points": [{"name": n} for n in names]})
    rows = report.collect(tmp_path)
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
    assert abs(rows["char"]["test_bpc"] - 0.7 / math.log(2)) < 1e-12
    md = (tmp_path / "results.md").read_text()
    assert "`damaged`: damaged" in md and "`failed`: failed" in md
