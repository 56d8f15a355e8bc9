"""`rnnjax report DIR`: one row per run directory of a sweep, grouped tables with intervals, and plots;
for a single run's directory, its summary and `curves.png` (train, valid and test against epochs).

    DIR/results.jsonl          one row per run: swept keys, parameters, perplexities, losses (nats),
                               bits per character (char corpora), tokens/s, wall time, steps, status,
                               `diverged`
    DIR/results.md             runs grouped by every swept key but the seed: test metric as mean ±
                               95% Student-t interval over seeds, seeds, diverged runs, parameters,
                               tokens/s, wall time, the verdict against a published anchor; time to a
                               validation target per group; one sentence per comparison of groups
    DIR/valid_curves.png       validation ppl (bits/char) against training tokens and wall-clock
                               seconds: mean over seeds, min-max band, per group
    DIR/test_by_cell.png       test metric per group, mean and 95% interval (seeds as points)
    DIR/test_vs_throughput.png test metric against tokens/s, the Pareto front dashed
    DIR/test_vs_KEY.png        test metric against each numeric swept key (layers, dropout, lr), a
                               line per cell and setting of the other keys

Diverged runs (`rnnjax.stats.diverged`: a finished run with a non-finite valid or test loss, or
one above ln V, worse than a uniform guess over the run's V-token vocabulary (vocab.json), i.e.
perplexity above V; a finished run of another task with a non-finite headline metric; a run
that failed on a non-finite loss) are counted per group and left out of every mean.

The swept keys come from `DIR/sweep.json` (written by `rnnjax sweep`), else they are the
keys whose values differ between the runs' `config.json` files. Anchors (published results,
`rnnjax.anchors`) come from the sweep config's `ANCHORS` dict and `--anchor` flags.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, NamedTuple

from rnnjax import anchors as anchors_lib
from rnnjax import report_plots, results, rundir, stats
from rnnjax.errors import DataError
from rnnjax.files import write_text_atomic
from rnnjax.records import read_metrics
from rnnjax.sweep import short_names

TIMING_FIELDS = ("tokens_per_s", "wall_s")  # the only fields that differ between identical reruns
BAR_KEY = "model.cell"


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(map(_fmt_value, v))
    return str(v)


class Group(NamedTuple):
    """The runs of one setting of every swept key but `seed`."""

    values: dict[str, Any]  # swept key -> value, seed left out
    runs: list[dict]  # finished runs and runs that failed on a non-finite loss
    ok: list[dict]  # finished and not diverged: every mean is over these

    @property
    def diverged(self) -> int:
        return len(self.runs) - len(self.ok)

    def values_of(self, field: str) -> list[float]:
        return [v for v in (stats.finite(r.get(field)) for r in self.ok) if v is not None]

    def interval(self, field: str) -> stats.Interval | None:
        return stats.interval(self.values_of(field))


def group_rows(rows: list[dict], keys: list[str]) -> list[Group]:
    """Finished runs and diverged failures grouped by every swept key except `seed`, in first-seen order."""
    group_keys = [k for k in keys if k != "seed"]
    groups: dict[str, Group] = {}
    for r in rows:
        if r["status"] == "done" or r.get("diverged"):
            g = groups.setdefault(json.dumps([r.get(k) for k in group_keys]),
                                  Group({k: r.get(k) for k in group_keys}, [], []))
            g.runs.append(r)
            if r["status"] == "done" and not r["diverged"]:
                g.ok.append(r)
    return list(groups.values())


def _table_metrics(done: list[dict]) -> list[tuple[str, str, int]]:
    """(column, row field, digits): perplexities or bits per character for language models, else the
    runs' headline metric. The last is the test metric the intervals and comparisons are of."""
    if done and all(r.get("task") == "lm" for r in done):
        if any(r.get("level") == "char" for r in done):
            return [("best valid bpc", "best_valid_bpc", 3), ("test nats", "test_loss", 3), ("test bpc", "test_bpc", 3)]
        return [("best valid ppl", "best_valid_ppl", 2), ("test ppl", "test_ppl", 2)]
    names = sorted({r["metric"] for r in done})
    return [(" / ".join(names) or "result", "value", 4)]


def _unit(done: list[dict]) -> str:
    """The unit of validation curves and targets: "bpc" (char LMs), "ppl" (word LMs), "loss" (other tasks)."""
    return {"test_bpc": "bpc", "test_ppl": "ppl"}.get(_table_metrics(done)[-1][1], "loss")


def _by_key(keys: list[str]) -> str | None:
    """The swept key groups are compared along (the cell), the others making up a setting."""
    group_keys = [k for k in keys if k != "seed"]
    return BAR_KEY if BAR_KEY in group_keys else (group_keys[0] if group_keys else None)


def _setting(g: Group, keys: list[str], names: dict[str, str], leave: str | None = None) -> tuple[str, ...]:
    """The group's values of the swept keys but the compared one (and `leave`): ("layers=2", "dropout=0.5")."""
    return tuple(f"{names[k]}={_fmt_value(g.values[k])}" for k in g.values if k not in (_by_key(keys), leave))


def numeric_keys(groups: list[Group], keys: list[str]) -> list[str]:
    """The swept keys, besides the seed and the compared one, whose values are all numbers (layers,
    dropout, learning rate) and differ within one line, a line being the groups that agree on every
    other key: `rnnjax report` plots the test metric against each. (A key set once per cell, such as
    each cell's chosen learning rate, would give lines of one point.)"""
    found = []
    for k in keys:
        if k in ("seed", _by_key(keys)):
            continue
        if not all(isinstance(g.values[k], (int, float)) and not isinstance(g.values[k], bool) for g in groups):
            continue
        lines: dict[tuple, set] = {}
        for g in groups:
            lines.setdefault(tuple(g.values[o] for o in keys if o not in (k, "seed")), set()).add(g.values[k])
        if any(len(values) > 1 for values in lines.values()):
            found.append(k)
    return found


def _count(value) -> str:
    return f"{int(value):,}" if value is not None else "–"


def _mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _ci(ci: stats.Interval | None, digits: int) -> str:
    if ci is None:
        return "–"
    return f"{ci.mean:.{digits}f} (n=1)" if ci.half is None else f"{ci.mean:.{digits}f} ± {ci.half:.{digits}f}"


def _mean_of(group: list[dict], field: str, fmt: str) -> str:
    values = [v for v in (stats.finite(r.get(field)) for r in group) if v is not None]
    return fmt.format(statistics.mean(values)) if values else "–"


class Timing(NamedTuple):
    """Time to a validation target: the target, whether it is the default, each run's first reach."""

    target: float
    default: bool
    reaches: dict[str, stats.Reach | None]  # run name -> first evaluation at or below the target


def timing(rows: list[dict], records: dict[str, list[dict]], tokens_per_step: dict[str, int | None],
           target: float | None) -> Timing | None:
    """Every grouped run's first reach of `target` (default: `stats.default_target` over the
    non-diverged runs); None unless the runs are language models of one level."""
    done = [r for r in rows if r["status"] == "done"]
    unit = _unit(done)
    if unit == "loss" or len({r.get("level") for r in done}) != 1:
        if target is not None:
            raise DataError("--target needs finished language-model runs of one level (all word or all char)")
        return None
    runs = [r for r in rows if r["status"] == "done" or r.get("diverged")]
    default = target is None
    if default:
        target = stats.default_target(stats.curve(records[r["run"]], unit) for r in runs if not r["diverged"])
        if target is None:
            return None
    return Timing(target, default, {r["run"]: stats.time_to_target(records[r["run"]], target,
                                                                  tokens_per_step[r["run"]] or 0, unit)
                                    for r in runs})


def _timing_lines(groups: list[Group], t: Timing, unit: str, group_keys: list[str],
                  names: dict[str, str]) -> list[str]:
    """The time-to-target section of results.md."""
    digits = 3 if unit == "bpc" else 2
    goal = f"valid {unit} ≤ {t.target:.{digits}f}"
    how = ("the default: the highest best-validation value of any finished, non-diverged run, so each of "
           "them reaches it; `--target X` sets another" if t.default else "set by `--target`")
    lines = ["", f"## Time to target: {goal}", "",
             f"Target {goal} ({how}). Training tokens (step × batch_size × seq_len) and wall-clock "
             f"seconds (that evaluation record's `wall_s`: training time summed over the run's starts) at the first "
             f"validation at or below it; mean over the group's runs, diverged ones included.", "",
             "| " + " | ".join([names[k] for k in group_keys] + [f"tokens to {goal}", f"seconds to {goal}"]) + " |",
             "|" + "---|" * (len(group_keys) + 2)]
    for g in groups:
        reaches = [t.reaches.get(r["run"]) for r in g.runs]
        got = [x for x in reaches if x is not None]
        if len(got) < len(reaches):
            tokens = wall = f"not reached by {len(reaches) - len(got)} of {len(reaches)}"
        else:
            walls = [x.wall_s for x in got if x.wall_s is not None]
            tokens = f"{statistics.fmean(x.tokens for x in got):,.0f}"
            wall = f"{statistics.fmean(walls):,.0f} s" if len(walls) == len(got) else "–"
        lines.append("| " + " | ".join([_fmt_value(g.values[k]) for k in group_keys] + [tokens, wall]) + " |")
    return lines


def _tied_to(by: str, groups: list[Group]) -> set[str]:
    """Swept keys whose value follows from `by`'s (zipped with it, e.g. each cell's own learning rate)."""
    seen: dict[str, dict] = {}
    for g in groups:
        for k, v in g.values.items():
            seen.setdefault(k, {}).setdefault(repr(g.values[by]), set()).add(repr(v))
    return {k for k, per in seen.items() if k != by and all(len(vs) == 1 for vs in per.values())
            and len(set().union(*per.values())) > 1}


def comparisons(groups: list[Group], keys: list[str], field: str, digits: int, unit: str, goal: str) -> list[str]:
    """`stats.compare` sentences on the groups' `field`, within each setting of the swept keys other than the
    cell and those that follow from it (zipped with it), which go with the cell's name."""
    by, names = _by_key(keys), short_names(keys)
    tied = _tied_to(by, groups) if by is not None else set()
    settings: dict[str, list[tuple[str, stats.Interval]]] = {}
    for g in groups:
        ci = g.interval(field)
        if by is not None and ci is not None:
            label = _fmt_value(g.values[by]) + "".join(f" ({names[k]}={_fmt_value(g.values[k])})" for k in
                                                       g.values if k in tied)
            setting = ", ".join(f"{names[k]}={_fmt_value(g.values[k])}" for k in g.values if k != by and k not in tied)
            settings.setdefault(setting, []).append((label, ci))
    return [f"- {setting + ': ' if setting else ''}{sentence}" for setting, items in settings.items()
            for sentence in stats.compare(items, digits, unit if unit in ("ppl", "bpc") else "", goal)]


def _verdict(g: Group, anchor: anchors_lib.Anchor | None) -> str:
    """The `vs published` cell: the anchor's verdict on the group's means of the anchor's fields."""
    if anchor is None:
        return "–"
    measured = {f: statistics.fmean(g.values_of(f)) if g.values_of(f) else None for f in anchor.figures}
    return f"{anchor.name}: {anchors_lib.verdict(anchor, measured, (g.ok or g.runs)[0].get('corpus'))}"


def markdown(rows: list[dict], keys: list[str], title: str, timing: Timing | None = None,
             assignments: dict[str, str] | None = None) -> str:
    """results.md: the grouped table, time to target, comparisons, unfinished runs (module docstring)."""
    group_keys = [k for k in keys if k != "seed"]
    names = short_names(keys)
    done = [r for r in rows if r["status"] == "done"]
    groups = group_rows(rows, keys)
    several = any(len(g.runs) > 1 for g in groups)
    metrics = _table_metrics(done)
    test_column, test_field, digits = metrics[-1]
    chosen = [anchors_lib.assign(assignments or {}, g.values, names) for g in groups]
    diverged = sum(g.diverged for g in groups)
    head = [names[k] for k in group_keys] + ["hidden", "params"] + [m[0] for m in metrics[:-1]] + \
           [f"{test_column} (95% CI)" if several else test_column] + (["seeds"] if several else []) + \
           (["diverged"] if diverged else []) + ["steps", "tokens/s", "wall"] + \
           (["vs published"] if any(chosen) else [])
    corpora = sorted({str(r.get("corpus")) for r in done})
    lines = [f"# {title}", "",
             f"{len(rows)} runs: {len(done)} finished, {sum(r['status'] == 'failed' for r in rows)} failed, "
             f"{sum(r['status'] not in ('done', 'failed') for r in rows)} unfinished; {diverged} diverged "
             f"(non-finite loss, or worse than a uniform guess: counted, left out of every mean); corpus "
             f"{', '.join(corpora)}."]
    if several:
        lines.append(f"{test_column}: mean ± half-width of the 95% Student-t interval over seeds, "
                     f"t(0.975, n-1) · s / √n; " + "".join(f"{m[0]}: mean ± sample std; " for m in metrics[:-1]) +
                     "seeds: runs averaged; n=1: one run, no interval.")
    else:
        lines.append("One run per group (n=1): no intervals.")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g, anchor in zip(groups, chosen):
        first = (g.ok or g.runs)[0]
        cells = [_fmt_value(g.values[k]) for k in group_keys]
        cells += ["/".join(sorted({str(r["hidden_size"]) for r in g.runs})), _count(first.get("num_params"))]
        cells += [_mean_std(g.values_of(f), d) for _, f, d in metrics[:-1]] + [_ci(g.interval(test_field), digits)]
        cells += [str(len(g.ok))] if several else []
        cells += [f"{g.diverged} of {len(g.runs)}" if g.diverged else "0"] if diverged else []
        cells += [_mean_of(g.ok or g.runs, "steps", "{:,.0f}"), _mean_of(g.ok, "tokens_per_s", "{:,.0f}"),
                  _mean_of(g.ok, "wall_s", "{:.0f} s")]
        cells += [_verdict(g, anchor)] if any(chosen) else []
        lines.append("| " + " | ".join(cells) + " |")
    if len({r["metric"] for r in done}) == 1:
        sentences = comparisons(groups, keys, test_field, digits, _unit(done), done[0]["goal"])
        if sentences:
            lines += ["", f"Neighbouring groups by mean {test_column} (overlapping 95% intervals are a coarse "
                          f"check, not a significance test):", ""] + sentences
    used = [anchors_lib.lookup(n) for n in dict.fromkeys(a.name for a in chosen if a)]
    if used:
        lines += ["", "Published anchors (verdict: the group's mean within the relative tolerance):", ""]
        lines += [f"- {a.describe()}" for a in used]
    if timing is not None:
        lines += _timing_lines(groups, timing, _unit(done), group_keys, names)
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        lines += ["", "Not finished:", ""]
        lines += [f"- `{r['run']}`: {r['status']}" + (f": {r['error']}" if r.get("error") else "")
                  + (" (running now, or interrupted: rerun the sweep to resume)" if r["status"] == "running" else "")
                  for r in bad]
    return "\n".join(lines) + "\n"


def _tokens_per_step(cfg: dict) -> int | None:
    batch, seq_len = cfg.get("train.batch_size"), cfg.get("train.seq_len")
    return batch * seq_len if isinstance(batch, int) and isinstance(seq_len, int) else None


def _series(groups: list[Group], keys: list[str], records: dict[str, list[dict]], per_step: dict[str, int | None],
            unit: str, field: str) -> list[report_plots.Series]:
    """What the plots draw per group: the averaged runs' validation curves, the test interval, throughput."""
    by, names = _by_key(keys), short_names(keys)
    return [report_plots.Series(
        cell=_fmt_value(g.values[by]) if by else "all", setting=_setting(g, keys, names),
        curves=[(stats.curve(records[r["run"]], unit), per_step[r["run"]]) for r in g.ok],
        test=g.interval(field), seeds=g.values_of(field), diverged=g.diverged,
        tokens_per_s=statistics.fmean(g.values_of("tokens_per_s")) if g.values_of("tokens_per_s") else None)
        for g in groups]


def write_report(sweep_dir: Path, out_dir: Path | None = None, target: float | None = None,
                 anchor_flags: list[str] | None = None) -> list[Path]:
    """Write results.jsonl, results.md and the plots for the runs under `sweep_dir` into `out_dir`.

    `target`: the validation value for time to target (default in `timing`); `anchor_flags`:
    `--anchor SELECTOR=ANCHOR` texts, applied over the sweep config's `ANCHORS`.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = results.collect(sweep_dir)
    configs = {r["run"]: results.run_config(sweep_dir / r["run"]) for r in rows}
    keys = results.swept_keys(sweep_dir, list(configs.values())) or ["seed"]
    assignments = {**anchors_lib.from_sweep_config(sweep_dir), **anchors_lib.parse_flags(anchor_flags or [])}
    records = {r["run"]: list(read_metrics(sweep_dir / r["run"] / rundir.METRICS))
               for r in rows if r["status"] == "done" or r["diverged"]}
    per_step = {run: _tokens_per_step(configs[run]) for run in records}
    jsonl = out_dir / "results.jsonl"
    write_text_atomic(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
    md = out_dir / "results.md"
    write_text_atomic(md, markdown(rows, keys, f"Sweep results: {sweep_dir.name}",
                                   timing(rows, records, per_step, target), assignments))
    written = [jsonl, md]
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return written
    unit, (column, field, _) = _unit(done), _table_metrics(done)[-1]
    groups = group_rows(rows, keys)
    series = _series(groups, keys, records, per_step, unit, field)
    written.append(report_plots.curves(series, unit, out_dir / "valid_curves.png"))
    if len({r["metric"] for r in done}) == 1:  # one test axis needs one metric
        label = {"ppl": "test perplexity", "bpc": "test bits per character"}.get(unit, column)
        names = short_names(keys)
        written.append(report_plots.intervals(series, label, names.get(_by_key(keys), "group"),
                                              out_dir / "test_by_cell.png"))
        if any(s.tokens_per_s for s in series):
            written.append(report_plots.pareto(series, label, done[0]["goal"], out_dir / "test_vs_throughput.png"))
        for key in numeric_keys(groups, keys):
            lines = [s._replace(setting=_setting(g, keys, names, leave=key)) for s, g in zip(series, groups)]
            written.append(report_plots.along(lines, [g.values[key] for g in groups], names[key], label,
                                              out_dir / f"test_vs_{names[key]}.png"))
    return written


def is_run_dir(path: Path) -> bool:
    """A single run's directory (its own config or summary), as opposed to a sweep directory of runs."""
    return any((Path(path) / name).is_file() for name in (rundir.CONFIG, rundir.SUMMARY))


def report_run(run_dir: Path, out_dir: Path | None = None) -> tuple[dict | None, list[Path]]:
    """One run: its summary (None while unfinished) and its curves plot, written to `out_dir` (default: the run)."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir or run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list(read_metrics(run_dir / rundir.METRICS))
    plot = report_plots.run_curves(records, run_dir.name, out_dir / rundir.CURVES)
    return rundir.read_summary(run_dir), [plot] if plot else []
