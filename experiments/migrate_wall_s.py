"""Migrate committed run directories to the resumed-run clock: `wall_s` summed over a run's starts.

Until 2026-12-07 a resumed run's `wall_s` (its evaluation records in metrics.jsonl and its
summary.json) counted from its last start, so time to target and wall time read short for every
run that was stopped and resumed. `rnnjax.loop` now keeps the clock in the checkpoint. This
script gives the runs trained before that the same reading:

    python experiments/migrate_wall_s.py experiments/*/*runs/*

For each run directory whose train.log says "resuming from the checkpoint at step N", the records
written after that start get the clock at step N added: the `wall_s` of the evaluation record at
step N (the checkpoint was saved right after it). If the checkpoint fell between evaluations
(a stop mid-epoch), the time from the last evaluation (or the start) to step N is estimated from
the train records' tokens/s, and the run is listed as estimated. A run whose records already read
as one clock (each start's records at or past the clock at its checkpoint) is left as it is, so
running the script twice changes nothing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from rnnjax.files import write_json_atomic, write_text_atomic

RESUME = re.compile(r"resuming from the checkpoint at step ([\d,]+)")


def resumes(run_dir: Path) -> list[int]:
    log = run_dir / "train.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [int(m.group(1).replace(",", "")) for m in RESUME.finditer(text)]


def segment(step: int, starts: list[int]) -> int:
    """Which start wrote a record at `step`: 0 for the first, j for the one resumed from starts[j - 1]."""
    return sum(step > n for n in starts)


def clock_at(records: list[dict], step: int, tokens_per_step: int) -> tuple[float, bool]:
    """(seconds of training at `step` on the migrated clock, whether it is estimated)."""
    timed = [r for r in records if "wall_s" in r and r.get("split") != "test" and r["step"] <= step]
    last = timed[-1] if timed else {"step": 0, "wall_s": 0.0}  # no evaluation yet: from the start
    if last["step"] == step:
        return last["wall_s"], False
    rates = [r["tokens_per_s"] for r in records if r.get("split") == "train" and last["step"] < r["step"] <= step
             and r.get("tokens_per_s")]
    return last["wall_s"] + (step - last["step"]) * tokens_per_step / rates[-1], True


def migrate(run_dir: Path) -> str | None:
    """Migrate one run directory; a line saying what changed, or None."""
    starts = resumes(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not starts or not metrics.exists():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    config = json.loads((run_dir / "config.json").read_text())
    tokens_per_step = config["train"]["batch_size"] * config["train"]["seq_len"]
    if all(r["wall_s"] >= clock_at([x for x in records if segment(x["step"], starts) < j], n, tokens_per_step)[0]
           for j, n in enumerate(starts, 1) for r in records if "wall_s" in r and segment(r["step"], starts) == j):
        return None  # one clock already: every start's records read at least the clock at its checkpoint
    offsets, estimated = [0.0], False
    for j, n in enumerate(starts, 1):  # the earlier starts' records are on the migrated clock by now
        at, guess = clock_at([r for r in records if segment(r["step"], starts) < j], n, tokens_per_step)
        offsets.append(at)
        estimated |= guess
        for r in records:
            if "wall_s" in r and segment(r["step"], starts) == j:
                r["wall_s"] += at
    write_text_atomic(metrics, "".join(json.dumps(r) + "\n" for r in records))
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        summary["wall_s"] += offsets[-1]
        write_json_atomic(summary_path, summary)
    return (f"{run_dir}: resumed at {', '.join(f'{n:,}' for n in starts)}; added {offsets[-1]:,.0f} s to the last "
            f"start's times{' (estimated from tokens/s: a mid-epoch checkpoint)' if estimated else ''}")


def main(argv: list[str]) -> int:
    for d in argv:
        line = migrate(Path(d))
        if line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
