"""experiments/bench.py's plumbing at its smoke-test shape: rows, the JSON file and the table.

Not a timed test: the speeds it prints are not checked, only that a row is complete and that
the table names the impl and dtype each row ran with (the GPU check compares "fast" and
"cudnn" rows in one table)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import pytest

BENCH = Path(__file__).resolve().parents[1] / "experiments" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rows_json_and_table(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RNNJAX_MALLOC", "default")  # leave the test process's allocator as it is
    out = tmp_path / "rows.json"
    rows = bench.main(["--shapes", "tiny", "--cells", "lstm,min_gru", "--mode", "train,eval", "--repeats", "1",
                       "--warmup", "2", "--impl", "reference", "--no-torch", "--json", str(out)])
    assert [(r["cell"], r["mode"], r["impl"]) for r in rows] == [
        ("lstm", "train", "reference"), ("lstm", "eval", "reference"),
        ("min_gru", "train", "reference"), ("min_gru", "eval", "reference")]
    assert all(r["rnnjax_tokens_per_s"] > 0 and r["ratio"] is None for r in rows)
    assert json.loads(out.read_text()) == rows
    capsys.readouterr()
    bench.main(["--render", str(out)])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| shape | cell | mode | dtype | impl |")
    assert table[2].startswith("| tiny | lstm | train | float32 | reference | 4x10, 1x32, 83 |")
    assert len(table) == 2 + len(rows)


def test_unknown_shape_is_one_line(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--shapes", "huge"])
    assert e.value.code == 2
    assert "unknown shape 'huge'" in capsys.readouterr().err


@pytest.mark.skipif(jax.default_backend() == "gpu", reason="the refusal of a backend without cuDNN")
def test_cudnn_without_a_gpu_is_one_line(bench, capsys, monkeypatch):
    monkeypatch.setenv("RNNJAX_MALLOC", "default")
    with pytest.raises(SystemExit) as e:
        bench.main(["--shapes", "tiny", "--cells", "lstm", "--mode", "train", "--impl", "cudnn", "--no-torch"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(": error: model.impl 'cudnn' needs an NVIDIA (cuDNN) or AMD (MIOpen) "
                                                  "GPU; this run's backend is cpu\n")
