"""rnnjax.anchors: the registry of published results, selectors, and the verdict column."""

from __future__ import annotations

import math

import pytest

from rnnjax import anchors
from rnnjax.errors import DataError
from rnnjax.files import write_json_atomic


def test_registry_holds_the_published_figures():
    r = anchors.REGISTRY
    assert [r[f"zaremba_{s}"].figures["test_ppl"] for s in ("small", "medium", "large")] == [114.5, 82.7, 78.4]
    assert [r[f"zaremba_{s}"].figures["valid_ppl"] for s in ("small", "medium", "large")] == [120.7, 86.2, 82.2]
    assert (r["gal_medium"].figures, r["gal_large"].figures) == ({"test_ppl": 79.7}, {"test_ppl": 75.2})
    assert r["awd_lstm"].figures["test_ppl"] == 57.3 and r["awd_lstm_repro"].figures == {"test_ppl": 58.8}
    assert r["awd_lstm_char"].figures == {"test_bpc": 1.175} and r["awd_lstm_char"].corpus == "ptb_char"
    assert r["feng_mingru"].figures == {"test_loss": 1.548} and r["feng_minlstm"].figures == {"test_loss": 1.555}
    assert r["charrnn"].figures == {"valid_loss": 1.395} and r["charrnn"].corpus == "tinyshakespeare"
    for name, a in r.items():
        assert a.name == name and a.source and a.checked and 0 < a.rel_tol <= 0.05
        assert set(a.figures) <= set(anchors.LABELS) and all(v > 0 for v in a.figures.values())
    assert r["zaremba_small"].rel_tol == 0.02 and r["zaremba_small"].preset == "ptb:small"


def test_verdict_reproduced_and_not():
    small = anchors.REGISTRY["zaremba_small"]
    assert anchors.verdict(small, {"test_ppl": 114.62}, "ptb") == "reproduced (114.6 vs 114.5 ± 2%)"
    assert anchors.verdict(small, {"test_ppl": 121.3}, "ptb") == "not reproduced: 121.3 vs 114.5 ± 2%"
    # Both figures compared when both are measured; one outside the tolerance fails the verdict.
    assert anchors.verdict(small, {"test_ppl": 114.6, "valid_ppl": 125.0}, "ptb") == \
        "not reproduced: test 114.6 vs 114.5 ± 2%, valid 125.0 vs 120.7 ± 2%"
    assert anchors.verdict(small, {"test_ppl": 116.78}, "ptb").startswith("reproduced")  # 2% of 114.5 is 2.29
    assert anchors.verdict(small, {"test_ppl": 112.3}, "ptb").startswith("reproduced")  # both sides
    assert anchors.verdict(small, {"test_ppl": 116.80}, "ptb").startswith("not reproduced")
    char = anchors.REGISTRY["awd_lstm_char"]
    assert anchors.verdict(char, {"test_bpc": 1.1801}, "ptb_char") == "reproduced (1.180 vs 1.175 ± 2%)"
    mingru = anchors.REGISTRY["feng_mingru"]
    assert anchors.verdict(mingru, {"test_loss": 1.70 * math.log(2)}, "tinyshakespeare") == \
        "not reproduced: 1.178 vs 1.548 ± 2%"


def test_verdict_refuses_other_corpora_and_missing_figures():
    small = anchors.REGISTRY["zaremba_small"]
    assert anchors.verdict(small, {"test_ppl": 114.5}, "ptb_char") == \
        "not comparable: corpus ptb_char, zaremba_small is on ptb"
    assert anchors.verdict(small, {"test_bpc": 1.2}, "ptb") == "not comparable: no test_ppl or valid_ppl measured"


def test_selectors_and_assignment():
    names = {"model.cell": "cell", "model.num_layers": "layers", "model.dropout": "dropout"}
    group = {"model.cell": "lstm", "model.num_layers": 2, "model.dropout": 0.5}
    assert anchors.matches("cell=lstm", group, names)
    assert anchors.matches("cell=lstm,layers=2,dropout=0.5", group, names)
    assert anchors.matches("model.num_layers=2", group, names)  # the full key works too
    assert not anchors.matches("cell=lstm,layers=1", group, names)
    assert anchors.matches("*", group, names) and anchors.matches("*", {}, {})  # every group, even of one run
    with pytest.raises(DataError, match="'hidden' is not a swept key"):
        anchors.matches("hidden=200", group, names)
    chosen = anchors.assign({"cell=lstm": "zaremba_small", "cell=lstm,dropout=0.5": "zaremba_medium"}, group, names)
    assert chosen.name == "zaremba_medium"  # the later selector wins
    assert anchors.assign({"cell=gru": "zaremba_small"}, group, names) is None


def test_flags_and_sweep_config(tmp_path):
    assert anchors.parse_flags(["cell=lstm=zaremba_small", "cell=gru,layers=2=gal_medium", "*=charrnn"]) == \
        {"cell=lstm": "zaremba_small", "cell=gru,layers=2": "gal_medium", "*": "charrnn"}
    for bad in ("zaremba_small", "=zaremba_small", "lstm=zaremba_small"):
        with pytest.raises(DataError, match="expected NAME=VALUE"):
            anchors.parse_flags([bad])
    with pytest.raises(DataError, match="unknown anchor 'nope'"):
        anchors.parse_flags(["cell=lstm=nope"])
    assert anchors.from_sweep_config(tmp_path) == {}  # no sweep.json
    write_json_atomic(tmp_path / "sweep.json", {"config": str(tmp_path / "gone.py:small"), "keys": []})
    assert anchors.from_sweep_config(tmp_path) == {}  # the config file is not reachable from here
    config = tmp_path / "bench.py"
    config.write_text('ANCHORS = {"cell=lstm": "zaremba_small"}\n')
    write_json_atomic(tmp_path / "sweep.json", {"config": f"{config}:small", "keys": []})
    assert anchors.from_sweep_config(tmp_path) == {"cell=lstm": "zaremba_small"}
    config.write_text('ANCHORS = ["zaremba_small"]\n')
    with pytest.raises(DataError, match="ANCHORS must be a dict"):
        anchors.from_sweep_config(tmp_path)
