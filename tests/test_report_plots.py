"""rnnjax.report_plots: what a figure's title promises about its error bars."""

from __future__ import annotations

from rnnjax.report_plots import Series, _spread
from rnnjax.stats import Interval


def series(cell: str, seeds: list[float]) -> Series:
    mean = sum(seeds) / len(seeds)
    return Series(cell, "", [], Interval(mean, 0.1 if len(seeds) > 1 else None, len(seeds)), seeds, None, 0)


def test_a_figure_of_single_runs_does_not_claim_intervals():
    assert _spread([series("lstm", [2.2]), series("gru", [2.3])]) == "one seed per point, no intervals"


def test_a_figure_with_several_seeds_names_its_intervals():
    assert "95% interval" in _spread([series("lstm", [2.2]), series("gru", [2.3, 2.4, 2.35])])
