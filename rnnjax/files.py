"""Files written so that a kill never leaves a torn one, with the permissions the user's umask gives.

A temporary file in the target's directory is written, flushed, fsynced and renamed
over the target (`os.replace` is atomic on POSIX). `tempfile.mkstemp` creates files
with mode 0600; they are given 0666 & ~umask instead, so a group sharing a data or run
directory can read them, as with any file the user creates.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_mode(fd: int) -> None:
    """Give the open file `fd` the mode a plain `open(path, "w")` would have created it with."""
    os.fchmod(fd, 0o666 & ~umask())


def jsonable(value: Any) -> Any:
    """Scalars of arrays as Python numbers, non-finite floats as strings, tuples as lists."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        user_mode(fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """JSON (floats at full precision, `jsonable` values) written atomically."""
    write_text_atomic(path, json.dumps(jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path | str) -> Any | None:
    """The parsed file, or None if it is missing, unreadable or not JSON (e.g. torn by a crash)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
