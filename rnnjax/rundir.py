"""The run directory: the only code that knows its files, who holds it, and which run it describes.

    DIR/.lock          held (fcntl.flock) by the one process running in DIR; its text names that process
    DIR/config.json    the run's identity: its resolved config, written before the first step
    DIR/vocab.json     token list, id order
    DIR/metrics.jsonl  one JSON object per logged event (append-only, flushed per line)
    DIR/tensorboard/   TensorBoard event files of the same records, with the `tensorboard` extra installed
    DIR/summary.json   the run's result, written once when it finishes (`records.make_summary`)
    DIR/checkpoints/   Orbax checkpoints (rnnjax.checkpoint); every one holds the config too
    DIR/status.json, DIR/train.log   a sweep point's state and output (rnnjax.sweep)
    DIR/*.png          plots a task draws

`open_run` decides what `rnnjax train --workdir DIR` does from what DIR holds:

    new        missing or empty                    start the run
    started    config.json (or only a checkpoint)  continue that run, with its own config
    finished   summary.json                        say so and change nothing (train.num_epochs or
                                                   train.max_steps changed: train it further)
    foreign    files, but no config to continue    refuse (`restart=True` moves DIR aside first)

A config given for a started or finished run must be that run's (only the resume-safe keys of
`config_keys.KEYS` may differ, and only while it is unfinished); a run never continues under another config.
Every file is written atomically (`rnnjax.files`), so a kill leaves each whole or absent.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import itertools
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from rnnjax import checkpoint
from rnnjax import config as config_lib
from rnnjax.config import ConfigDict
from rnnjax.errors import DataError, RunDirError
from rnnjax.files import read_json, write_json_atomic
from rnnjax.records import (JsonlMetrics, MetricsWriter, NoMetrics, TeeMetrics, TensorBoardMetrics, headline,
                            read_metrics, tensorboard_installed)

LOCK = ".lock"
CONFIG = "config.json"
VOCAB = "vocab.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
SUMMARY = "summary.json"
STATUS = "status.json"
LOG = "train.log"
CURVES = "curves.png"  # written by `rnnjax report RUN_DIR`
RUNS = Path("runs")  # where runs without --workdir go
LENGTH_KEYS = ("train.num_epochs", "train.max_steps")  # changing one trains a finished run further


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary, or None when there is none or it is damaged (then the run is redone)."""
    summary = read_json(Path(run_dir) / SUMMARY)
    return summary if isinstance(summary, dict) and summary else None


# ---- what a directory holds --------------------------------------------------------------

def _entries(path: Path) -> list[str]:
    """What `path` holds besides the lock and a sweep's notes on it (which hold no run of their own)."""
    return sorted(p.name for p in path.iterdir() if p.name not in (LOCK, STATUS, LOG) and not p.name.startswith("."))


def describe(path: Path) -> str:
    """"new", "started", "finished" or "foreign" (see the module docstring)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--workdir {path}: is a file, not a directory")
    if not path.exists() or not _entries(path):
        return "new"
    if read_summary(path) is not None:
        return "finished"
    if (path / CONFIG).is_file() or checkpoint.newest_config(path) is not None:
        return "started"
    return "foreign"


def saved_config(path: Path) -> ConfigDict:
    """The config of the run in `path`: config.json, else the newest checkpoint's copy of it."""
    path = Path(path)
    if (path / CONFIG).is_file():
        return config_lib.from_json(path / CONFIG)
    saved = checkpoint.newest_config(path)
    if saved is None:
        raise RunDirError(f"{path}: no {CONFIG} and no checkpoint holding the run's config")
    return config_lib.from_dict(saved, f"{path / checkpoint.CHECKPOINTS} (newest checkpoint)")


def default_dir(spec: str, overrides: dict[str, str]) -> Path:
    """`runs/NAME` for a run without --workdir: the same command always names the same directory.

    NAME is the config's name and preset (`quickstart`, `ptb-small`), plus a short hash of
    the overrides when there are any, so running the same command again continues (or
    reports) that run, and a different command never lands in its directory.
    """
    path, _, preset = spec.partition(":")
    name = Path(path).stem + (f"-{preset}" if preset else "")
    if overrides:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True).encode()).hexdigest()[:8]
        name += f"-{digest}"
    return RUNS / name


# ---- claiming ----------------------------------------------------------------------------

class Claim:
    """An exclusive `fcntl.flock` on DIR/.lock, released when the process ends however it ends."""

    def __init__(self, path: Path):
        self.path = Path(path)
        lock = self.path / LOCK
        self.created = not lock.exists()
        try:
            self._fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise RunDirError(f"{lock}: cannot create the lock file ({e.strerror})") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(self._fd)
            os.close(self._fd)
            raise RunDirError(f"{self.path}: in use by {holder}; wait for it to finish or stop it "
                              f"(a directory holds one run at a time)") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "started": datetime.datetime.now().isoformat(timespec="seconds"),
                                       "command": " ".join(sys.argv)}).encode())

    def release(self, remove: bool = False) -> None:
        """Give the directory up; `remove` also deletes the lock file (a refused directory keeps no trace)."""
        if self._fd is not None:
            if remove:
                (self.path / LOCK).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def holder(path: Path) -> str | None:
    """Who holds `path`'s claim now ("pid N on HOST since ..."), or None when nobody does."""
    try:
        fd = os.open(Path(path) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return _read_holder(fd)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {info['pid']} on {info['host']} since {info['started']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# ---- the run -----------------------------------------------------------------------------

class Run:
    """A claimed run directory and the config of the run it holds.

    `state` is "new" or "started" (a finished run is reported by `open_run`, not opened).
    Only the process that writes (process 0 of a multi-host run) holds the claim.
    """

    def __init__(self, path: Path, config: ConfigDict, state: str, claim: Claim | None, created: bool,
                 safe_changes: list[str]):
        self.path = Path(path)
        self.config = config
        self.state = state
        self.safe_changes = safe_changes
        self._claim = claim
        self._created = created

    @property
    def writes(self) -> bool:
        return self._claim is not None

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self) -> None:
        """config.json: the run's identity, written before its first step."""
        if self.writes:
            write_json_atomic(self.path / CONFIG, self.config.to_dict())

    def write_vocab(self, vocab: list[str]) -> None:
        if self.writes:
            write_json_atomic(self.path / VOCAB, vocab)

    def metrics(self, keep: int | None = None) -> MetricsWriter:
        """The metrics writer, cut back to the first `keep` records on resume: metrics.jsonl, and
        TensorBoard events in tensorboard/ when tensorboardX is installed."""
        if not self.writes:
            return NoMetrics(keep)
        if not tensorboard_installed():
            return JsonlMetrics(self.path / METRICS, keep)
        logged = list(read_metrics(self.path / METRICS))  # before JsonlMetrics cuts it
        return TeeMetrics(JsonlMetrics(self.path / METRICS, keep),
                          TensorBoardMetrics(self.path / TENSORBOARD, logged, keep))

    def write_summary(self, summary: dict) -> None:
        if self.writes:
            write_json_atomic(self.path / SUMMARY, summary)

    def abandon(self) -> None:
        """Remove a directory this process created if the run failed before leaving anything of value."""
        if self._created and self.writes and not set(_entries(self.path)) - {CONFIG, VOCAB}:
            self.release()
            shutil.rmtree(self.path, ignore_errors=True)

    def release(self) -> None:
        if self._claim is not None:
            self._claim.release()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class Finished(Exception):
    """`open_run` found the run finished; the message says so, naming its result."""


def _moved_aside(path: Path) -> Path:
    """Rename `path` to a free `PATH.old-STAMP[-N]` beside it; return the new name."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in itertools.count():
        target = path.with_name(f"{path.name}.old-{stamp}" + (f"-{i}" if i else ""))
        if target.exists():
            continue
        try:
            os.rename(path, target)
        except OSError as e:
            raise RunDirError(f"{path}: cannot move it aside to {target} ({e.strerror})") from None
        return target


def _make_dir(path: Path) -> bool:
    """Create `path`; True if this call created it (False: it already existed)."""
    if path.exists() and not path.is_dir():
        raise RunDirError(f"--workdir {path}: is a file, not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
        return True
    except FileExistsError:
        if not path.is_dir():
            raise RunDirError(f"--workdir {path}: is a file, not a directory") from None
        return False
    except OSError as e:
        raise RunDirError(f"--workdir {path}: cannot create it ({e.strerror})") from None


def open_run(workdir: Path | str, given: ConfigDict | None, overrides: dict[str, str] | None = None,
             restart: bool = False, writer: bool = True) -> Run:
    """Claim `workdir` and decide which run it holds (module docstring); raise `Finished` if it is done.

    `given` is the config asked for (validated by the caller), None to continue the run in
    `workdir` with `overrides` applied to its own config. `writer=False` (every process of
    a multi-host run but the first) decides without creating, claiming or writing anything.
    """
    path = Path(workdir)
    created = _make_dir(path) if writer else False
    claim = Claim(path) if writer else None
    try:
        state = describe(path)
        if restart and state != "new":
            claim.release()
            print(f"{path}: moved the earlier run's files aside to {_moved_aside(path)}")
            return open_run(path, given, overrides, writer=writer)
        if state == "foreign":
            raise RunDirError(f"{path}: holds files ({', '.join(_entries(path)[:4])}"
                              f"{', ...' if len(_entries(path)) > 4 else ''}) but no {CONFIG} and no checkpoint "
                              f"to continue a run from; pick an empty or new --workdir, or pass --restart to "
                              f"move them aside and start over")
        if state == "new":
            if given is None:
                raise RunDirError(f"{path}: holds no run to continue; pass --config to start one")
            run = Run(path, given, "new", claim, created, [])
            run.write_config()
            return run
        saved = saved_config(path)
        if given is None:
            config = config_lib.apply_overrides(saved, overrides or {})
            config_lib.validate(config)
        else:
            config = given
        unsafe, safe = config_lib.resume_changes(saved, config)
        longer = [c for c in safe if c.split()[0] in LENGTH_KEYS]
        if state == "finished" and not unsafe:
            if not longer:
                metric, value = headline(read_summary(path))
                raise Finished(f"{path}: this run finished earlier ({metric} {value:.6g}); {SUMMARY} left as it "
                               f"was (raise train.num_epochs or train.max_steps to train it further, or "
                               f"--restart to move it aside and train it again)")
            kept = path / f"summary-step{read_summary(path).get('steps', 0)}.json"
            os.replace(path / SUMMARY, kept)
            print(f"{path}: training the finished run further; its earlier summary is now {kept.name}")
        if unsafe:
            raise RunDirError(f"{path}: holds a run of another config (differs in {', '.join(unsafe)}; only the "
                              f"keys `rnnjax config keys` marks 'may change on resume' may change when a run "
                              f"continues); use another --workdir, or pass --restart to move it aside")
        run = Run(path, config, "started", claim, created, safe)
        if not (path / CONFIG).is_file() or safe:
            run.write_config()  # recovered from a checkpoint, or continued with changed safe keys
        return run
    except BaseException:
        if claim is not None:
            claim.release(remove=claim.created)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise


def open_existing(workdir: Path) -> tuple[Path, ConfigDict]:
    """A run directory to read from (eval, sample): its path and config; nothing is claimed."""
    path = Path(workdir)
    if not path.is_dir():
        raise DataError(f"--workdir {path}: no such directory")
    if describe(path) in ("new", "foreign"):
        raise DataError(f"{path}: no {CONFIG}; is this a run directory?")
    return path, saved_config(path)


def read_vocab(path: Path) -> list[str]:
    """The token list a run saved, in id order."""
    vocab = read_json(Path(path) / VOCAB)
    if not isinstance(vocab, list):
        raise DataError(f"{Path(path) / VOCAB}: missing or unreadable; is this a language model's run directory?")
    return vocab


def storage_error(e: OSError, path: Path) -> RunDirError:
    """A one-line error for a full, read-only or unwritable disk, naming what is safe."""
    steps = checkpoint.saved_steps(path)
    safe = (f"the last complete checkpoint is step {steps[-1]:,} in {path / checkpoint.CHECKPOINTS}"
            if steps else "no checkpoint was completed")
    why = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
           errno.EACCES: "permission denied", errno.EDQUOT: "the disk quota is exhausted",
           errno.EFBIG: "a file reached its size limit (a full disk or `ulimit -f`)"}.get(e.errno, e.strerror)
    where = e.filename or path
    return RunDirError(f"{where}: cannot write: {why}; {safe}; fix that and run the same command to continue")

