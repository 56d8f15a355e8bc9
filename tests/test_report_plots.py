"""rnnjax.report_plots: what a figure's title promises about its error bars."""

from __future__ import annotations

import pytest

from rnnjax.report_plots import Series, _spread, setting_codes
from rnnjax.stats import Interval


def series(cell: str, seeds: list[float]) -> Series:
    mean = sum(seeds) / len(seeds)
    return Series(cell, (), [], Interval(mean, 0.1 if len(seeds) > 1 else None, len(seeds)), seeds, None, 0)


def test_a_figure_of_single_runs_does_not_claim_intervals():
    assert _spread([series("lstm", [2.2]), series("gru", [2.3])]) == "one seed per point, no intervals"


def test_a_figure_with_several_seeds_names_its_intervals():
    assert "95% interval" in _spread([series("lstm", [2.2]), series("gru", [2.3, 2.4, 2.35])])


@pytest.mark.parametrize("settings", [
    [(f"dropout={d}", f"layers={n}") for d in (0, 0.3) for n in (1, 2, 3)],  # the ablation: 6 settings
    [(f"lr={lr}",) for lr in (0.1, 0.25, 0.5, 1, 2, 4)],  # one key, more values than line styles
    [(f"a={i}", f"b={i}", f"c={i}") for i in range(16)],
    [()],
])
def test_every_setting_gets_its_own_line_style_and_fill(settings):
    codes = setting_codes(settings)
    assert len(set(codes)) == len(settings)


def test_two_keys_each_keep_one_code():
    """Layers (3 values) set the line style, dropout (2) the fill: hollow means dropout, whatever the depth."""
    settings = [(f"dropout={d}", f"layers={n}") for d in (0, 0.3) for n in (1, 2, 3)]
    codes = dict(zip(settings, setting_codes(settings)))
    assert {codes[("dropout=0.3", f"layers={n}")][1] for n in (1, 2, 3)} == {1}
    assert {codes[(f"dropout={d}", "layers=2")][0] for d in (0, 0.3)} == {1}
