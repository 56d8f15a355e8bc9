"""`rnnjax report DIR`: one row per run directory of a sweep, a grouped table and plots.

    DIR/results.jsonl      one row per run: swept keys, parameters, perplexities, bits per
                           character (char corpora), tokens/s, wall time, steps, status
    DIR/results.md         runs grouped by every swept key but the seed; mean ± std over seeds
    DIR/valid_curves.png   training and validation perplexity (bits/char) against step, per run
    DIR/test_by_cell.png   test perplexity (bits/char) by cell, one group per other setting

The swept keys come from `DIR/sweep.json` (written by `rnnjax sweep`), else they are the
keys whose values differ between the runs' `config.json` files.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

from rnnjax import config as config_lib
from rnnjax import rundir
from rnnjax.errors import DataError
from rnnjax.files import read_json, write_text_atomic
from rnnjax.plots import pyplot
from rnnjax.rundir import perplexity, read_metrics
from rnnjax.sweep import short_names

TIMING_FIELDS = ("tokens_per_s", "wall_s")  # the only fields that differ between identical reruns
BAR_KEY = "model.cell"


def run_dirs(sweep_dir: Path) -> list[Path]:
    """Run directories under `sweep_dir`, in the sweep's point order when sweep.json says it."""
    found = {p.name: p for p in sweep_dir.iterdir() if p.is_dir() and
             any((p / f).is_file() for f in (rundir.CONFIG, rundir.STATUS, rundir.SUMMARY))}
    sweep = read_json(sweep_dir / "sweep.json")
    points = sweep.get("points", []) if isinstance(sweep, dict) else []
    order = [pt["name"] for pt in points if isinstance(pt, dict) and pt.get("name") in found]
    return [found[n] for n in order] + [found[n] for n in sorted(found) if n not in order]


def swept_keys(sweep_dir: Path, configs: list[dict]) -> list[str]:
    sweep = read_json(sweep_dir / "sweep.json")
    if isinstance(sweep, dict) and sweep.get("keys"):
        return list(sweep["keys"])
    keys = list(configs[0]) if configs else []
    return [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]


def _config(run_dir: Path) -> dict:
    saved = read_json(run_dir / rundir.CONFIG)
    return config_lib.flatten(config_lib.ConfigDict(saved)) if isinstance(saved, dict) else {}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def collect(sweep_dir: Path) -> list[dict]:
    """One row per run directory: finished, failed, running, interrupted or damaged, of any task.

    Every row has `metric`, `value` and `goal` (the run's headline figure, lower or higher
    better); language-model rows also have perplexities, and bits per character on char corpora.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir}: no such directory")
    dirs = run_dirs(sweep_dir)
    if not dirs:
        raise DataError(f"{sweep_dir}: no run directories (subdirectories with config.json, status.json or "
                        f"summary.json)")
    configs = [_config(d) for d in dirs]
    keys = swept_keys(sweep_dir, configs)
    rows = []
    for d, cfg in zip(dirs, configs):
        summary = rundir.read_summary(d)
        status = read_json(d / rundir.STATUS)
        status = status if isinstance(status, dict) else {}
        values = status.get("values") if isinstance(status.get("values"), dict) else {}
        row = {"run": d.name, **{k: cfg.get(k, values.get(k)) for k in keys}}
        row["hidden_size"] = cfg.get("model.hidden_size")
        if summary is not None:
            metric, value = rundir.headline(summary)
            row.update(status="done", task=summary.get("task", cfg.get("task", "lm")), metric=metric, value=value,
                       goal=summary.get("goal", "max" if "accuracy" in metric else "min"))
            for field in ("corpus", "level", "cpu"):
                row[field] = summary.get(field)
            for field in ("num_params", "best_valid_ppl", "valid_ppl", "test_ppl", "tokens_per_s", "wall_s",
                          "steps", "epochs"):
                row[field] = _number(summary.get(field))
            for split in ("valid", "test"):  # bits per character, on char corpora only
                loss = _number(summary.get(f"{split}_loss"))
                char = summary.get("level") == "char" and loss is not None
                row[f"{split}_bpc"] = loss / math.log(2) if char else None
        elif (d / rundir.SUMMARY).exists():
            row["status"] = "damaged"
            row["error"] = f"{rundir.SUMMARY} is unreadable; rerun the sweep to redo this point"
        else:
            row["status"] = status.get("status", "incomplete")  # "running": running now, or interrupted
            if status.get("error"):
                row["error"] = status["error"]
        rows.append(row)
    return rows


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "-".join(map(_fmt_value, v))
    return str(v)


def _mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def group_rows(rows: list[dict], keys: list[str]) -> list[tuple[tuple, list[dict]]]:
    """Finished rows grouped by every swept key except `seed`, in first-seen order."""
    group_keys = [k for k in keys if k != "seed"]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["status"] == "done":
            groups.setdefault(tuple(json.dumps(r.get(k)) for k in group_keys), []).append(r)
    return list(groups.items())


def _table_metrics(done: list[dict]) -> list[tuple[str, str, int]]:
    """(column, row field, digits): perplexities or bits per character for language models, else the
    runs' headline metric."""
    if done and all(r.get("task") == "lm" for r in done):
        if any(r.get("level") == "char" for r in done):
            return [("valid bpc", "valid_bpc", 3), ("test bpc", "test_bpc", 3)]
        return [("best valid ppl", "best_valid_ppl", 2), ("test ppl", "test_ppl", 2)]
    names = sorted({r["metric"] for r in done})
    return [(" / ".join(names) or "result", "value", 4)]


def _count(value) -> str:
    return f"{int(value):,}" if value is not None else "–"


def _mean_of(group: list[dict], field: str, fmt: str) -> str:
    values = [r[field] for r in group if r.get(field) is not None]
    return fmt.format(statistics.mean(values)) if values else "–"


def markdown(rows: list[dict], keys: list[str], title: str) -> str:
    group_keys = [k for k in keys if k != "seed"]
    names = short_names(keys)
    done = [r for r in rows if r["status"] == "done"]
    groups = group_rows(rows, keys)
    several = any(len(g) > 1 for _, g in groups)
    metrics = _table_metrics(done)
    head = [names[k] for k in group_keys] + ["hidden", "params"] + [m[0] for m in metrics] + \
           (["seeds"] if several else []) + ["steps", "tokens/s", "wall"]
    lines = [f"# {title}", ""]
    corpora = sorted({str(r.get("corpus")) for r in done})
    lines.append(f"{len(rows)} runs: {len(done)} finished, {sum(r['status'] == 'failed' for r in rows)} failed, "
                 f"{sum(r['status'] not in ('done', 'failed') for r in rows)} unfinished; corpus {', '.join(corpora)}"
                 + ("; mean ± std over seeds (sample std)" if several else "") + ".")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, g in groups:
        first = g[0]
        hidden = sorted({r["hidden_size"] for r in g})
        cells = [_fmt_value(first.get(k)) for k in group_keys]
        cells += ["/".join(map(str, hidden)), _count(first.get("num_params"))]
        cells += [_mean_std([r[f] for r in g if r.get(f) is not None], d) for _, f, d in metrics]
        cells += [str(len(g))] if several else []
        cells += [_count(first.get("steps")), _mean_of(g, "tokens_per_s", "{:,.0f}"), _mean_of(g, "wall_s", "{:.0f} s")]
        lines.append("| " + " | ".join(cells) + " |")
    bad = [r for r in rows if r["status"] != "done"]
    if bad:
        lines += ["", "Not finished:", ""]
        lines += [f"- `{r['run']}`: {r['status']}" + (f": {r['error']}" if r.get("error") else "")
                  + (" (running now, or interrupted: rerun the sweep to resume)" if r["status"] == "running" else "")
                  for r in bad]
    return "\n".join(lines) + "\n"


def _curves(sweep_dir: Path, rows: list[dict], path: Path) -> None:
    """Validation (markers) and logged training (thin lines) perplexity or bits/char against step."""
    plt = pyplot()
    char = any(r.get("level") == "char" for r in rows)
    unit = "bits per character" if char else "perplexity"
    fig, ax = plt.subplots(figsize=(10, 6))
    for i, r in enumerate(rows):
        by_split: dict[str, dict[int, float]] = {"train": {}, "valid": {}}
        for rec in read_metrics(sweep_dir / r["run"] / "metrics.jsonl"):
            if rec.get("split") in by_split and "loss" in rec:
                y = rec["loss"] / math.log(2) if char else perplexity(rec["loss"])
                by_split[rec["split"]][rec["step"]] = y  # a resumed run may log a step twice: last wins
        color = f"C{i % 10}"
        train, valid = sorted(by_split["train"].items()), sorted(by_split["valid"].items())
        if train:
            ax.plot(*zip(*train), "-", color=color, lw=0.8, alpha=0.45)
        if valid:
            ax.plot(*zip(*valid), "o-", color=color, lw=1.6, ms=6, label=r["run"])
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.set_title(f"validation {unit} (markers) and training {unit} at logged steps (thin lines)")
    if not char:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(rows: list[dict], keys: list[str], path: Path) -> None:
    plt = pyplot()

    done = [r for r in rows if r["status"] == "done"]
    unit, metric, _ = _table_metrics(done)[-1]
    unit = {"test bpc": "test bits per character", "test ppl": "test perplexity"}.get(unit, unit)
    bar_key = BAR_KEY if BAR_KEY in keys else keys[0]
    other = [k for k in keys if k not in (bar_key, "seed")]
    names = short_names(keys)
    bars = list(dict.fromkeys(json.dumps(r.get(bar_key)) for r in done))
    settings = list(dict.fromkeys(tuple(json.dumps(r.get(k)) for k in other) for r in done))
    width = 0.8 / max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(settings) * max(len(bars), 1) * 0.5 + 2), 4.5))
    for j, b in enumerate(bars):
        means, stds = [], []
        for s in settings:
            vals = [r[metric] for r in done if json.dumps(r.get(bar_key)) == b
                    and tuple(json.dumps(r.get(k)) for k in other) == s]
            means.append(statistics.mean(vals) if vals else np.nan)
            stds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        x = np.arange(len(settings)) + (j - (len(bars) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds if any(stds) else None, label=_fmt_value(json.loads(b)), color=f"C{j % 10}", capsize=3)
    ax.set_xticks(np.arange(len(settings)))
    ax.set_xticklabels([",".join(f"{names[k]}={_fmt_value(json.loads(v))}" for k, v in zip(other, s)) or "all"
                        for s in settings], fontsize=8)
    ax.set_ylabel(unit)
    ax.set_title(f"{unit} by {names[bar_key]}")
    ax.legend(title=names[bar_key], fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(sweep_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write results.jsonl, results.md and the plots for the runs under `sweep_dir` into `out_dir`."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir or sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = collect(sweep_dir)
    configs = [_config(sweep_dir / r["run"]) for r in rows]
    keys = swept_keys(sweep_dir, configs) or ["seed"]
    jsonl = out_dir / "results.jsonl"
    write_text_atomic(jsonl, "".join(json.dumps(r) + "\n" for r in rows))
    md = out_dir / "results.md"
    write_text_atomic(md, markdown(rows, keys, f"Sweep results: {sweep_dir.name}"))
    written = [jsonl, md]
    done = [r for r in rows if r["status"] == "done"]
    if done:
        _curves(sweep_dir, rows, out_dir / "valid_curves.png")
        written.append(out_dir / "valid_curves.png")
    if done and len({r["metric"] for r in done}) == 1:  # one bar chart needs one metric
        _bars(rows, keys, out_dir / "test_by_cell.png")
        written.append(out_dir / "test_by_cell.png")
    return written
