"""The rows of a report: one per run directory of a sweep, whatever state the run is in.

`collect` reads what `rundir` wrote (config.json, status.json, summary.json, vocab.json) and
never raises on a damaged or unfinished run: it marks it, so `rnnjax report` can show it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rnnjax import config as config_lib
from rnnjax import records, rundir, stats
from rnnjax.errors import DataError
from rnnjax.files import read_json


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


def run_config(run_dir: Path) -> dict:
    """The run's saved config.json, flattened to {key: value}; {} when unreadable."""
    saved = read_json(run_dir / rundir.CONFIG)
    return config_lib.flatten(config_lib.ConfigDict(saved)) if isinstance(saved, dict) else {}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def collect(sweep_dir: Path) -> list[dict]:
    """One row per run directory: finished, failed, running, interrupted or damaged, of any task.

    Every row has `metric`, `value` and `goal` (the run's headline figure, lower or higher
    better) and `diverged`; language-model rows also have perplexities, losses in nats, bits
    per character on char corpora, and `vocab_size` (from vocab.json, when the run saved it).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise DataError(f"{sweep_dir}: no such directory")
    dirs = run_dirs(sweep_dir)
    if not dirs:
        raise DataError(f"{sweep_dir}: no run directories (subdirectories with config.json, status.json or "
                        f"summary.json)")
    configs = [run_config(d) for d in dirs]
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
            metric, value = records.headline(summary)
            row.update(status="done", task=summary.get("task", cfg.get("task", "lm")), metric=metric, value=value,
                       goal=summary.get("goal", "max" if "accuracy" in metric else "min"))
            for field in ("corpus", "level", "cpu"):
                row[field] = summary.get(field)
            for field in ("num_params", "best_valid_ppl", "valid_ppl", "test_ppl", "tokens_per_s", "wall_s",
                          "steps", "epochs"):
                row[field] = _number(summary.get(field))
            nats = {f"{split}_loss": stats.finite(summary.get(f"{split}_loss")) for split in ("valid", "test")}
            best = stats.finite(row["best_valid_ppl"])
            nats["best_valid_loss"] = math.log(best) if best is not None and best > 0 else None
            if summary.get("test_step") is not None:  # tested at the best checkpoint: its validation goes with it
                row["valid_ppl"], nats["valid_loss"] = row["best_valid_ppl"], nats["best_valid_loss"]
            for field, loss in nats.items():  # bits per character, on char corpora only
                char = summary.get("level") == "char" and loss is not None
                row[field.replace("_loss", "_bpc")] = loss / math.log(2) if char else None
                if field in summary or field == "best_valid_loss":
                    row[field] = loss
            vocab = read_json(d / rundir.VOCAB)
            row["vocab_size"] = len(vocab) if isinstance(vocab, list) else None
            losses = [summary[k] for k in ("valid_loss", "test_loss") if k in summary]
            row["diverged"] = stats.diverged(losses, row["vocab_size"]) or (
                metric in summary and stats.finite(summary[metric]) is None)
        elif (d / rundir.SUMMARY).exists():
            row.update(status="damaged", error=f"{rundir.SUMMARY} is unreadable; rerun the sweep to redo this point",
                       diverged=False)
        else:
            row["status"] = status.get("status", "incomplete")  # "running": running now, or interrupted
            if status.get("error"):
                row["error"] = status["error"]
            row["diverged"] = row["status"] == "failed" and "non-finite" in str(row.get("error", ""))
        rows.append(row)
    return rows
