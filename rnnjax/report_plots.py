"""The figures of `rnnjax report`: validation curves, test metric with intervals, test metric against throughput
and against each numeric swept key; for a single run, its train/valid/test curves.

Every figure gives each cell one colour and one marker (the same in all of them), each setting
of the other swept keys one line style and marker fill (except where the x axis names the setting),
and puts its legend outside the axes.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.ticker import EngFormatter, FuncFormatter, LogFormatter

from rnnjax.plots import pyplot
from rnnjax.stats import UNITS, Interval, Point

MARKERS = "osD^vPX*<>"
LINESTYLES = ("-", "--", ":", "-.")
FILLS = ("full", "none", "left", "top")


class Series(NamedTuple):
    """One group of runs, as the figures draw it."""

    cell: str  # the compared key's value: colour and marker
    setting: tuple[str, ...]  # the other swept keys' values, ("layers=2", "dropout=0.5"): line style and fill
    curves: list[tuple[list[Point], int | None]]  # per averaged run: validation curve, training tokens per step
    test: Interval | None
    seeds: list[float]  # the averaged runs' test values
    tokens_per_s: float | None
    diverged: int

    @property
    def setting_text(self) -> str:
        return ", ".join(self.setting)

    @property
    def label(self) -> str:
        return self.cell + (f" ({self.setting_text})" if self.setting else "") + \
            (f" [{self.diverged} diverged, left out]" if self.diverged else "")


def setting_codes(settings: list[tuple[str, ...]]) -> list[tuple[int, int]]:
    """(line style, marker fill) indices, distinct for each setting of the other swept keys.

    With two keys (("dropout=0.3", "layers=2")) the one with more values sets the line style and
    the other the fill, so each reads on its own; with one key both follow it; otherwise, or with
    more values than styles, each setting gets its own pair (unique for up to 16 settings)."""
    width = len(settings[0]) if settings else 0
    if 1 <= width <= 2 and all(len(p) == width for p in settings):
        values = [list(dict.fromkeys(column)) for column in zip(*settings)]
        order = sorted(range(width), key=lambda k: -len(values[k]))
        line, fill = order[0], order[-1]
        if len(values[line]) <= len(LINESTYLES) and len(values[fill]) <= len(FILLS):
            return [(values[line].index(p[line]), values[fill].index(p[fill])) for p in settings]
    n = len(LINESTYLES)
    return [(i % n, (i + i // n) % len(FILLS)) for i in range(len(settings))]


def _styles(series: list[Series]) -> list[dict]:
    cells = list(dict.fromkeys(s.cell for s in series))
    settings = list(dict.fromkeys(s.setting for s in series))
    codes = dict(zip(settings, setting_codes(settings)))
    return [{"color": f"C{cells.index(s.cell) % 10}", "marker": MARKERS[cells.index(s.cell) % len(MARKERS)],
             "linestyle": LINESTYLES[codes[s.setting][0]], "fillstyle": FILLS[codes[s.setting][1]]} for s in series]


def _spread(series: list[Series]) -> str:
    """What the error bars of a test-metric figure show: intervals, or nothing when every point is one run."""
    if all(len(s.seeds) <= 1 for s in series if s.test is not None):
        return "one seed per point, no intervals"
    return "mean and 95% interval over seeds (small rings: each seed)"


def _band(runs: list[tuple[list[Point], int | None]], wall: bool) -> tuple[np.ndarray, ...] | None:
    """(x, mean, min, max) over the runs at the steps every run evaluated (all steps if none is shared);
    x is training tokens, or with `wall` the mean wall-clock seconds of that evaluation."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    for points, per_step in runs:
        for p in points:
            x = p.wall_s if wall else (p.step * per_step if per_step else None)
            if x is not None:
                by_step.setdefault(p.step, []).append((x, p.value))
    shared = [s for s in sorted(by_step) if len(by_step[s]) == len(runs)] or sorted(by_step)
    if not shared:
        return None
    xy = [np.array(by_step[s]) for s in shared]
    return (np.array([a[:, 0].mean() for a in xy]), np.array([a[:, 1].mean() for a in xy]),
            np.array([a[:, 1].min() for a in xy]), np.array([a[:, 1].max() for a in xy]))


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path


def curves(series: list[Series], unit: str, path: Path) -> Path:
    """Validation curves against training tokens (left) and wall-clock seconds (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    name = UNITS[unit] + (" (nats)" if unit == "loss" else "")
    for s, style in zip(series, _styles(series)):
        for ax, wall in zip(axes, (False, True)):
            band = _band(s.curves, wall)
            if band is None:
                continue
            x, mean, lo, hi = band
            ax.plot(x, mean, lw=1.6, ms=4, label=s.label if not wall else None, **style)
            if len(s.curves) > 1:
                ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15, lw=0)
    axes[0].xaxis.set_major_formatter(EngFormatter(sep=""))  # 40k, 1.2M
    axes[0].set_xlabel("training tokens (step × batch size × sequence length)")
    axes[1].set_xlabel("wall-clock seconds of training (summed over the run's starts)")
    axes[0].set_ylabel(f"validation {name}")
    for ax in axes:
        ax.grid(alpha=0.3)
        if unit == "ppl":
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))  # plain numbers, where there is room
        if not ax.lines:
            ax.text(0.5, 0.5, "no evaluation record has wall_s", ha="center", transform=ax.transAxes, color="0.4")
    several = any(len(s.curves) > 1 for s in series)
    fig.suptitle(f"validation {name}: " + ("mean over seeds, band min–max over seeds" if several else "one seed each"))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def intervals(series: list[Series], ylabel: str, by_name: str, path: Path) -> Path:
    """The test metric per group: mean with its 95% interval as error bar, each seed a small ring.

    Groups sit side by side, one slot each, those of one setting of the other keys together; the
    ticks name the cell where each setting holds one cell (a learning rate chosen per cell), else the
    setting, the cells then told apart by the legend."""
    plt = pyplot()
    drawn = [(s, style) for s, style in zip(series, _styles(series)) if s.test is not None]
    settings = list(dict.fromkeys(s.setting for s, _ in drawn))
    one_each = len(settings) > 1 and all(sum(s.setting == t for s, _ in drawn) == 1 for t in settings)
    slots, x, ticks, labels = [], 0.0, [], []
    for setting in settings:
        members = [(s, style) for s, style in drawn if s.setting == setting]
        at = [x + i for i in range(len(members))]
        slots += list(zip(at, members))
        if len(settings) == 1 or one_each:
            ticks += at
            labels += [s.cell + (f"\n{s.setting_text}" if one_each else "") for s, _ in members]
        else:
            ticks.append(sum(at) / len(at))
            labels.append(members[0][0].setting_text)
        x += len(members) + 0.8
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.55 * len(slots) + 3)), 4.8))
    labelled = set()
    for at, (s, style) in slots:
        ax.errorbar([at], [s.test.mean], yerr=[s.test.half] if s.test.half else None, fmt=style["marker"],
                    color=style["color"], ms=8, capsize=5, lw=1.5,  # the ticks name the setting: no fill code
                    label=None if s.cell in labelled else s.cell)
        ax.scatter([at] * len(s.seeds), s.seeds, s=22, facecolors="none", edgecolors=style["color"], zorder=3)
        labelled.add(s.cell)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} by {by_name}: {_spread(series)}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title=by_name, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def along(series: list[Series], xs: list[float], xname: str, ylabel: str, path: Path) -> Path:
    """The test metric against one numeric swept key (layers, dropout, learning rate): a line per cell
    and setting of the other keys (`Series.setting` without that key), each point the mean with its
    95% interval, each seed a small ring; the cells are dodged sideways so their bars do not overlap."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    log = min(xs) > 0 and max(xs) > 10 * min(xs)
    if log:
        ax.set_xscale("log")
    cells = list(dict.fromkeys(s.cell for s in series))
    span = (np.log10(max(xs) / min(xs)) if log else max(xs) - min(xs)) or 1.0
    lines: dict[tuple[str, str], tuple[dict, list[tuple[float, Series]]]] = {}
    for s, x, style in zip(series, xs, _styles(series)):
        if s.test is not None:
            lines.setdefault((s.cell, s.setting), (style, []))[1].append((x, s))
    for (cell, _), (style, points) in lines.items():
        points.sort(key=lambda p: p[0])
        shift = (cells.index(cell) - (len(cells) - 1) / 2) * 0.015 * span
        at = [x * 10**shift if log else x + shift for x, _ in points]
        halves = [s.test.half or 0.0 for _, s in points]
        ax.errorbar(at, [s.test.mean for _, s in points], yerr=halves if any(halves) else None, ms=7, capsize=4,
                    lw=1.5, label=points[0][1].label, **style)
        for a, (_, s) in zip(at, points):
            ax.scatter([a] * len(s.seeds), s.seeds, s=18, facecolors="none", edgecolors=style["color"], zorder=3)
    means = [s.test.mean for _, points in lines.values() for _, s in points]
    if means and min(means) > 0 and max(means) > 3 * min(means):  # a diverging point would flatten the rest
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ticks = sorted(set(xs))
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_xlabel(xname)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} against {xname}: {_spread(series)}", fontsize=10)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def pareto(series: list[Series], ylabel: str, goal: str, path: Path) -> Path:
    """The test metric against training throughput, per group; the Pareto front (no group both faster
    and better) dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    drawn = [(s, style) for s, style in zip(series, _styles(series)) if s.test is not None and s.tokens_per_s]
    for s, style in drawn:
        ax.errorbar([s.tokens_per_s], [s.test.mean], yerr=[s.test.half] if s.test.half else None,
                    fmt=style["marker"], fillstyle=style["fillstyle"], color=style["color"], ms=8, capsize=4,
                    label=s.label)
    front, best = [], None
    sign = 1 if goal == "min" else -1
    for s, _ in sorted(drawn, key=lambda d: (-d[0].tokens_per_s, sign * d[0].test.mean)):  # fastest, then best
        if best is None or (s.test.mean < best if goal == "min" else s.test.mean > best):
            front.append((s.tokens_per_s, s.test.mean))
            best = s.test.mean
    if len(front) > 1:
        ax.plot(*zip(*front), "--", color="0.4", lw=1, zorder=1, label="Pareto front")
    speeds = [s.tokens_per_s for s, _ in drawn]
    if speeds and max(speeds) > 10 * min(speeds):
        ax.set_xscale("log")
    ax.set_xlabel("training throughput (tokens/s, mean over seeds)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} against throughput ({'lower' if goal == 'min' else 'higher'} is better)")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plotted_at(record: dict, x: str) -> float:
    """Where a record goes on the `x` ("epoch" or "step") axis: at the step of the parameters it
    scored, which for a test of the best-validation checkpoint (`checkpoint_step`) is not the
    step the record was written at."""
    if "checkpoint_step" in record and record["step"]:
        return record[x] * record["checkpoint_step"] / record["step"]
    return record[x]


def run_curves(records: list[dict], title: str, path: Path) -> Path | None:
    """One run's train, valid and test values of its headline metric against epochs (None: nothing logged).

    The metric is perplexity for a language model, else accuracy where evaluations report it, else the loss.
    """
    evals = [r for r in records if r.get("split") != "train"]
    metric = next((m for m in ("perplexity", "accuracy", "loss") if any(m in r for r in evals or records)), None)
    if metric is None:
        return None
    x = "epoch" if all("epoch" in r for r in records) else "step"  # runs logged before records had epochs
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split, style in (("train", "-"), ("valid", "o-"), ("test", "s")):
        rows = [r for r in records if r.get("split") == split and isinstance(r.get(metric), (int, float))]
        if rows:
            ax.plot([plotted_at(r, x) for r in rows], [r[metric] for r in rows], style, ms=4,
                    label=f"{split} (one batch)" if split == "train" else split,
                    lw=0.8 if split == "train" else 1.5, alpha=0.6 if split == "train" else 1.0)
    if metric == "perplexity":
        ax.set_yscale("log")
        for axis in (ax.yaxis.set_major_formatter, ax.yaxis.set_minor_formatter):
            axis(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set(xlabel=x, ylabel=metric, title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)
