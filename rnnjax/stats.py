"""Statistics for sweep reports: Student-t intervals over seeds, divergence, time to a target.

Pure functions over numbers and metrics records (no files), so each is tested on made-up data.

- `t_quantile(p, df)`: the Student-t quantile, found by bisection on the t CDF, which is
  computed from the regularized incomplete beta function (continued fraction, modified
  Lentz; Numerical Recipes §6.4). Accurate to ~1e-9 for df >= 1; no scipy needed.
- `interval(values)`: mean ± t(0.975, n-1) * s / sqrt(n), s the sample std; no half-width for n=1;
  `compare` states in words how the intervals of neighbouring groups relate.
- `diverged(losses, vocab_size)`: the divergence rule (see its docstring).
- `curve`, `time_to_target`, `default_target`: the validation curve of a run and the first
  point where it reaches a target value.
"""

from __future__ import annotations

import math
import statistics
from typing import Iterable, NamedTuple

LEVEL = 0.95  # two-sided confidence level of every interval in a report


# ---- Student t ---------------------------------------------------------------------------

def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                    -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t with `df` degrees of freedom (bisection on `t_cdf`)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# ---- intervals ---------------------------------------------------------------------------

class Interval(NamedTuple):
    """Mean of `n` values and the half-width of its `LEVEL` interval (None when n < 2)."""

    mean: float
    half: float | None
    n: int

    @property
    def low(self) -> float:
        return self.mean - (self.half or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half or 0.0)


def interval(values: Iterable[float], level: float = LEVEL) -> Interval | None:
    """Mean ± t((1 + level) / 2, n - 1) * s / sqrt(n) over `values` (seeds); None when empty.

    The seeds are treated as independent draws of the training outcome, so this is the interval
    for the expected result of the configuration, not for one run.
    """
    values = [float(v) for v in values]
    if not values:
        return None
    n, mean = len(values), statistics.fmean(values)
    if n == 1:
        return Interval(mean, None, 1)
    return Interval(mean, t_quantile((1.0 + level) / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n), n)


def overlap(a: Interval, b: Interval) -> bool | None:
    """Whether the two intervals overlap; None when either has no interval (one seed)."""
    if a.half is None or b.half is None:
        return None
    return a.low <= b.high and b.low <= a.high


def _mean_text(ci: Interval, digits: int) -> str:
    return f"{ci.mean:.{digits}f}, n=1" if ci.half is None else f"{ci.mean:.{digits}f} ± {ci.half:.{digits}f}"


def compare(items: list[tuple[str, Interval]], digits: int, unit: str = "", goal: str = "min") -> list[str]:
    """One plain sentence per pair of neighbours when the named intervals are ranked by mean, best
    first: the means, the difference, and whether the two intervals overlap (a coarse check, not
    a significance test)."""
    ranked = sorted(items, key=lambda item: item[1].mean, reverse=goal == "max")
    unit = f" {unit}" if unit else ""
    out = []
    for (na, a), (nb, b) in zip(ranked, ranked[1:]):
        diff = f"{abs(b.mean - a.mean):.{digits}f}{unit}"
        pair = f"{na} ({_mean_text(a, digits)}) and {nb} ({_mean_text(b, digits)})"
        if overlap(a, b) is None:
            out.append(f"{pair} differ by {diff}; a group with one run has no interval to compare.")
        elif overlap(a, b):
            out.append(f"{pair} differ by {diff}, within the {LEVEL:.0%} intervals (they overlap).")
        else:
            out.append(f"{na} is {'lower' if goal == 'min' else 'higher'} than {nb} by {diff} "
                       f"({a.mean:.{digits}f} vs {b.mean:.{digits}f}); the {LEVEL:.0%} intervals do not overlap.")
    return out


# ---- divergence --------------------------------------------------------------------------

def finite(value) -> float | None:
    """`value` as a finite float, else None (non-finite floats are stored as the strings "nan", "inf")."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def diverged(losses: Iterable, vocab_size: int | None) -> bool:
    """Whether a finished run diverged, from its evaluation losses (nats per token).

    The rule: any loss is non-finite (NaN or inf, stored as a string by `files.jsonable`), or,
    with a known vocabulary of V tokens, above ln V, i.e. worse than a uniform guess
    (perplexity above V; bits per character above log2 V). Such a run is counted and shown
    but never averaged with the others.
    """
    limit = math.log(vocab_size) if vocab_size and vocab_size > 1 else math.inf
    for loss in losses:
        number = finite(loss)
        if number is None or number > limit:
            return True
    return False


# ---- validation curves and time to target ------------------------------------------------

UNITS = {"ppl": "perplexity", "bpc": "bits per character", "loss": "loss"}


def to_unit(loss: float, unit: str) -> float:
    """A loss in nats per token as perplexity ("ppl"), bits per character ("bpc") or itself ("loss")."""
    if unit == "ppl":
        return math.exp(min(loss, 700.0))
    return loss / math.log(2) if unit == "bpc" else loss


class Point(NamedTuple):
    step: int
    value: float  # in the curve's unit
    wall_s: float | None  # training seconds up to the record (summed over the run's starts), when it has it


def curve(records: Iterable[dict], unit: str, split: str = "valid") -> list[Point]:
    """The `split` evaluations of a run's metrics records, by step, with finite losses.

    A step logged twice (a resumed run) keeps its last record.
    """
    by_step: dict[int, Point] = {}
    for rec in records:
        loss = finite(rec.get("loss"))
        if rec.get("split") == split and loss is not None and isinstance(rec.get("step"), int):
            by_step[rec["step"]] = Point(rec["step"], to_unit(loss, unit), finite(rec.get("wall_s")))
    return [by_step[s] for s in sorted(by_step)]


class Reach(NamedTuple):
    step: int
    tokens: int  # training tokens seen: step * batch_size * seq_len
    wall_s: float | None


def time_to_target(records: Iterable[dict], target: float, tokens_per_step: int, unit: str) -> Reach | None:
    """The first validation evaluation at or below `target` (lower is better, float rounding of the
    loss -> perplexity conversion aside: a relative 1e-9); None if there is none.

    `wall_s` is the record's: training seconds up to it, summed over the run's starts.
    """
    for p in curve(records, unit):
        if p.value <= target * (1 + 1e-9):
            return Reach(p.step, p.step * tokens_per_step, p.wall_s)
    return None


def default_target(curves: Iterable[list[Point]]) -> float | None:
    """The worst (highest) best-validation value among `curves` (one per non-diverged run), so
    every one of those runs reaches it; None without curves."""
    bests = [min(p.value for p in c) for c in curves if c]
    return max(bests) if bests else None
