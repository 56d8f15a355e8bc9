"""rnnjax.stats: t quantiles, intervals over seeds, the divergence rule, time to target on synthetic curves."""

from __future__ import annotations

import math
import statistics

import pytest

from rnnjax import stats

# Two-sided 95% (p = 0.975) and other quantiles of Student's t, from standard tables.
T_TABLE = [(0.975, 1, 12.706205), (0.975, 2, 4.302653), (0.975, 4, 2.776445), (0.975, 9, 2.262157),
           (0.975, 30, 2.042272), (0.975, 1000, 1.962339), (0.995, 3, 5.840909), (0.9, 5, 1.475884)]


@pytest.mark.parametrize("p,df,expected", T_TABLE)
def test_t_quantile_matches_tables(p, df, expected):
    assert stats.t_quantile(p, df) == pytest.approx(expected, abs=2e-6)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-expected, abs=2e-6)


def test_t_cdf_inverts_the_quantile_and_betainc_has_its_closed_forms():
    for df in (1, 2, 7, 50):
        for p in (0.6, 0.9, 0.975, 0.999):
            assert stats.t_cdf(stats.t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)
    assert stats.betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert stats.betainc(2.0, 1.0, 0.3) == pytest.approx(0.09)  # x^2
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)


def test_interval_from_known_values():
    ci = stats.interval([1.0, 2.0, 3.0])  # mean 2, s = 1, n = 3
    assert ci.mean == 2.0 and ci.n == 3
    assert ci.half == pytest.approx(4.302653 / math.sqrt(3), abs=1e-6)
    values = [114.2, 115.0, 113.9, 114.6]
    ci = stats.interval(values)
    assert ci.half == pytest.approx(3.182446 * statistics.stdev(values) / 2, rel=1e-6)
    assert (ci.low, ci.high) == pytest.approx((ci.mean - ci.half, ci.mean + ci.half))
    one = stats.interval([5.0])
    assert one == stats.Interval(5.0, None, 1) and (one.low, one.high) == (5.0, 5.0)
    assert stats.interval([]) is None


def test_overlap():
    a, b, c = stats.Interval(10.0, 1.0, 3), stats.Interval(11.5, 1.0, 3), stats.Interval(13.0, 0.5, 3)
    assert stats.overlap(a, b) and stats.overlap(b, a)
    assert stats.overlap(a, c) is False
    assert stats.overlap(a, stats.Interval(10.0, None, 1)) is None


def test_divergence_rule():
    vocab = 10_000  # ln V = 9.21
    assert not stats.diverged([4.8, 4.7], vocab)
    assert stats.diverged([float("nan"), 4.7], vocab)
    assert stats.diverged(["nan", 4.7], vocab)  # how files.jsonable stores NaN
    assert stats.diverged([4.7, "inf"], vocab)
    assert stats.diverged([None], vocab)
    assert stats.diverged([9.3], vocab)  # perplexity 10,938 > 10,000: worse than uniform
    assert not stats.diverged([9.2], vocab)
    assert not stats.diverged([50.0], None)  # unknown vocabulary: only non-finite losses count
    assert stats.diverged([5.0], 65)  # char level: 7.2 bits per char > log2(65)


def _records(losses, every=100, wall_per_step=0.5):
    """A synthetic metrics.jsonl: train records between validation records every `every` steps."""
    out = []
    for i, loss in enumerate(losses, start=1):
        out.append({"step": i * every - 1, "split": "train", "loss": loss - 0.2, "tokens_per_s": 1.0})
        out.append({"step": i * every, "epoch": i / 10, "split": "valid", "loss": loss,
                    "wall_s": i * every * wall_per_step})
    return out


def test_time_to_target_reached_and_not_reached():
    losses = [math.log(v) for v in (400.0, 200.0, 150.0, 120.0, 118.0)]
    records = _records(losses)
    reach = stats.time_to_target(records, 150.0, tokens_per_step=20 * 35, unit="ppl")
    assert reach == stats.Reach(300, 300 * 700, 150.0)
    assert stats.time_to_target(records, 100.0, 700, "ppl") is None
    first = stats.time_to_target(records, 1000.0, 700, "ppl")
    assert first.step == 100  # already below at the first evaluation
    bpc = stats.time_to_target(_records([2.0, 1.2, 1.0]), 1.5, 100, "bpc")  # 2.89, 1.73, 1.44 bits
    assert bpc.step == 300 and bpc.tokens == 30_000


def test_curve_skips_torn_and_nonfinite_records_and_keeps_the_last_of_a_repeated_step():
    records = [{"step": 10, "split": "valid", "loss": 5.0}, {"step": 10, "split": "valid", "loss": 4.0},
               {"step": 20, "split": "valid", "loss": "nan"}, {"step": 30, "split": "test", "loss": 1.0},
               {"event": "rollback", "step": 5}, {"step": 40, "split": "valid", "loss": 3.0, "wall_s": 9.0}]
    assert stats.curve(records, "loss") == [stats.Point(10, 4.0, None), stats.Point(40, 3.0, 9.0)]
    reach = stats.time_to_target(records, 4.5, 10, "loss")
    assert reach == stats.Reach(10, 100, None)  # no wall_s in the record: unknown, not zero


def test_default_target_is_the_worst_best_value():
    fast = stats.curve(_records([5.0, 4.0, 3.5]), "loss")
    slow = stats.curve(_records([6.0, 5.0, 4.5, 4.6]), "loss")
    target = stats.default_target([fast, slow, []])
    assert target == 4.5
    assert all(stats.time_to_target(_records(c), target, 1, "loss") for c in ([5.0, 4.0, 3.5], [6.0, 5.0, 4.5]))
    assert stats.default_target([]) is None


def test_compare_states_overlap_in_words():
    a, b, c, one = (stats.Interval(114.6, 0.99, 3), stats.Interval(115.07, 2.74, 3), stats.Interval(140.0, 1.0, 3),
                    stats.Interval(270.0, None, 1))
    assert stats.compare([("gru", b), ("lstm", a)], 2, "ppl") == [
        "lstm (114.60 ± 0.99) and gru (115.07 ± 2.74) differ by 0.47 ppl, within the 95% intervals (they overlap)."]
    assert stats.compare([("rnn", c), ("gru", b)], 1) == [
        "gru is lower than rnn by 24.9 (115.1 vs 140.0); the 95% intervals do not overlap."]
    assert stats.compare([("rnn", one), ("gru", b)], 1, "bpc") == [
        "gru (115.1 ± 2.7) and rnn (270.0, n=1) differ by 154.9 bpc; a group with one run has no interval to compare."]
    accuracy = stats.compare([("a", stats.Interval(0.90, 0.01, 3)), ("b", stats.Interval(0.95, 0.01, 3))], 2,
                             goal="max")
    assert accuracy == ["b is higher than a by 0.05 (0.95 vs 0.90); the 95% intervals do not overlap."]
    assert stats.compare([("only", a)], 2) == []
