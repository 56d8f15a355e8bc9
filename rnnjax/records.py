"""What a run records, wherever it goes: the metrics-writer interface, its JSONL backend (the
source of truth) and TensorBoard view, reading records back, and the one summary schema every
task's `summary.json` follows.

`rnnjax.rundir` decides the files' names and when they are written; this module only
knows what is in them.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import platform
import socket
import time
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import jax

from rnnjax.files import jsonable, write_text_atomic

# Keys every summary.json has, whatever the task; the task adds its own metrics beside them.
SUMMARY_CORE = ("task", "metric", "goal", "steps", "epochs", "num_params", "wall_s")


# ---- metrics -----------------------------------------------------------------------------

class MetricsWriter(Protocol):
    """Where logged records go; another backend (W&B) is one more class."""

    records: int  # records written so far, counted from the start of the run

    def write(self, record: dict) -> None: ...

    def close(self) -> None: ...


class JsonlMetrics:
    """Append-only `metrics.jsonl`; each record is one line, flushed as it is written.

    `keep=N` first cuts the file to its first N records (atomically): a resumed run drops
    what was logged after the checkpoint it resumes from, and any torn last line.
    """

    def __init__(self, path: Path | str, keep: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep is not None:
            kept = list(itertools.islice(read_metrics(self.path), keep))
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self.records = sum(1 for _ in read_metrics(self.path))
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(jsonable(record)) + "\n")
        self._file.flush()
        self.records += 1

    def close(self) -> None:
        self._file.close()


class NoMetrics:
    """The writer of a process that writes no files (every process of a multi-host run but the first)."""

    def __init__(self, keep: int | None = None):
        self.records = keep or 0

    def write(self, record: dict) -> None:
        self.records += 1

    def close(self) -> None:
        pass


class TeeMetrics:
    """Every record to each of several writers; the first (metrics.jsonl) counts them."""

    def __init__(self, *writers: MetricsWriter):
        self.writers = writers

    @property
    def records(self) -> int:
        return self.writers[0].records

    def write(self, record: dict) -> None:
        for writer in self.writers:
            writer.write(record)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def read_metrics(path: Path | str) -> Iterator[dict]:
    """Records of a `metrics.jsonl`; a torn line (from a kill mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


# ---- TensorBoard -------------------------------------------------------------------------

NOT_SCALARS = ("step", "epoch", "wall_s")  # where a record sits in time: TensorBoard has its own step and time axes


def tensorboard_installed() -> bool:
    """Whether tensorboardX, the optional `tensorboard` extra, imports."""
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        return False
    return True


def scalars(record: dict) -> dict[str, float]:
    """A record's finite numbers as TensorBoard tags: `split/key` (`train/loss`, `valid/perplexity`),
    or `event/key` for an event (`rollback/lr_scale`); none for a record that names neither.
    (metrics.jsonl holds a non-finite value, e.g. the first record's tokens/s, as a string.)"""
    group = record.get("split") or record.get("event")
    if not isinstance(group, str):
        return {}
    return {f"{group}/{key}": float(value) for key, value in record.items()
            if key not in NOT_SCALARS and isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value)}


def _event(**fields) -> bytes:
    """One serialized TensorBoard `Event`, stamped now (tensorboardX's copy of the protobuf; no TensorFlow)."""
    from tensorboardX.proto.event_pb2 import Event

    return Event(wall_time=time.time(), **fields).SerializeToString()


class TensorBoardMetrics:
    """TensorBoard event files of the records' `scalars`, each at its record's step: a view of
    metrics.jsonl (which stays the source of truth) for `tensorboard --logdir`.

    Needs the `tensorboard` extra (tensorboardX). One event per record, flushed (and fsynced,
    by tensorboardX) as it is written. Each writer starts a new file in `directory`, named by
    the time: TensorBoard reads a run's files in name order.

    On resume `logged` is what metrics.jsonl held before it was cut to its first `keep`
    records. The new file opens with a restart marker at the earliest step cut, which makes
    TensorBoard hide what earlier files hold from that step on, then writes the kept records
    from that step on again: each curve shows the kept records, one value per step. A
    directory without event files yet gets every kept record.
    """

    def __init__(self, directory: Path | str, logged: Sequence[dict] = (), keep: int | None = None):
        from tensorboardX import RecordWriter

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        kept = list(logged[:keep])
        if any(directory.glob("events.out.tfevents.*")):
            since = min((r["step"] for r in logged[len(kept):]), default=None)
        else:
            since = 0 if kept else None
        self._file = RecordWriter(str(directory / f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}"))
        self._file.write(_event(file_version="brain.Event:2"))
        if since is not None:
            self._file.write(_event(step=since, session_log={"status": "START"}))
            for record in kept:
                if record["step"] >= since:
                    self._add(record)
        self._file.flush()
        self.records = len(kept)

    def _add(self, record: dict) -> None:
        values = scalars(record)
        if values:
            self._file.write(_event(step=record["step"], summary={
                "value": [{"tag": tag, "simple_value": value} for tag, value in values.items()]}))

    def write(self, record: dict) -> None:
        self._add(record)
        self._file.flush()
        self.records += 1

    def close(self) -> None:
        self._file.close()


# ---- summaries ---------------------------------------------------------------------------

def perplexity(nll: float) -> float:
    """exp of a mean NLL in nats, capped so a diverged run still records a finite number."""
    return math.exp(min(nll, 700.0))


def ppl_text(ppl: float, digits: int = 2) -> str:
    """A perplexity for the console: fixed decimals, or scientific notation past 1e6 (a diverged run's
    1e304 as '1.01e+304', not 300 digits)."""
    return f"{ppl:.{digits}f}" if abs(ppl) < 1e6 else f"{ppl:.3g}"


def cpu_model() -> str:
    """The CPU's model name (benchmarks record it: the CPU kind changes between machines)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """Versions and hardware, recorded in every summary."""
    return {"jax_version": jax.__version__, "device_kind": jax.devices()[0].device_kind, "cpu": cpu_model(),
            "host": socket.gethostname(), "python": platform.python_version()}


def make_summary(task: str, metric: str, goal: str, core: dict, metrics: dict) -> dict:
    """One summary schema for every task: `SUMMARY_CORE`, the environment, then the task's metrics.

    `metric` names the task's headline figure (e.g. "test_ppl") and `goal` whether lower
    ("min") or higher ("max") is better, so reports rank any task's runs the same way.
    """
    summary = {"task": task, "metric": metric, "goal": goal, **core, **environment(), **metrics}
    missing = [k for k in SUMMARY_CORE if k not in summary]
    if missing or metric not in summary or goal not in ("min", "max"):
        raise ValueError(f"summary lacks {missing or metric} or has goal {goal!r}")
    return summary


def headline(summary: dict) -> tuple[str, float]:
    """(metric name, value) of a summary; summaries written before `metric` existed name none."""
    metric = summary.get("metric") or next(
        (k for k in ("test_ppl", "test_mse", "test_accuracy", "accuracy") if k in summary), None)
    value = summary.get(metric) if metric else None
    return metric or "result", float(value) if isinstance(value, (int, float)) else float("nan")
