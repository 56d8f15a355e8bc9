"""The files a run writes into its directory, written so that a kill never corrupts them.

    DIR/config.json    resolved config (atomic)
    DIR/vocab.json     token list, id order (atomic)
    DIR/metrics.jsonl  one JSON object per logged event (append-only, flushed per line)
    DIR/summary.json   final figures (atomic)

Floats are written with Python's `repr`, i.e. at full precision.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import jax


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write text to a temporary file in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Write JSON atomically (see `write_text_atomic`)."""
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


class MetricsLog:
    """Append-only `metrics.jsonl`; each record is one line, flushed as it is written.

    `keep=N` first cuts the file to its first N records (atomically): a resumed run drops
    what was logged after the checkpoint it resumes from, and any torn last line.
    `records` counts the records in the file.
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
        self._file.write(json.dumps(_jsonable(record)) + "\n")
        self._file.flush()
        self.records += 1

    def close(self) -> None:
        self._file.close()


def read_metrics(path: Path | str) -> Iterator[dict]:
    """Records of a `metrics.jsonl`; a torn last line (from a kill mid-write) is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def perplexity(nll: float) -> float:
    """exp of a mean NLL in nats, capped so a diverged run still records a finite number."""
    return math.exp(min(nll, 700.0))


def environment() -> dict:
    """Versions and device, recorded in every summary."""
    return {"jax_version": jax.__version__, "device_kind": jax.devices()[0].device_kind}
