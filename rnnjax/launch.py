"""Running a sweep's points: one `rnnjax train` process per point, placed on cores or GPUs.

    rnnjax sweep --config FILE[:PRESET] --workdir DIR [--jobs N] [--shard I/N]

Each point runs as `python -m rnnjax train --config FILE[:PRESET] --workdir DIR/NAME
--config.KEY=VALUE ...`; the training process claims DIR/NAME itself (`rnnjax.rundir`),
so two sweeps over one directory never run a point twice at once. A point's state:

    done         its summary.json reads (a damaged one counts as not done: the point is redone)
    running      another process holds its directory now
    failed       its process exited with an error (status.json holds the error line)
    interrupted  started and stopped by a signal, a kill or a crash: rerunning resumes it
    new          never started

`DIR/sweep.json` records the grid and the command-line overrides the directory's runs
were made with; a later sweep into DIR must have the same overrides (points may be added).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from rnnjax import config as config_lib
from rnnjax import population, records, rundir
from rnnjax.config import ConfigDict
from rnnjax.data import load_corpus, resolve_data_dir
from rnnjax.errors import ConfigError
from rnnjax.files import read_json, write_json_atomic
from rnnjax.progress import format_seconds
from rnnjax.sweep import Point, short_names

SWEEP = "sweep.json"


def corpus_vocab_size(data_dir: Path | None) -> Callable[[ConfigDict], int]:
    """`vocab_size(config)` for parameter matching, loading each distinct corpus once."""
    cache: dict[str, int] = {}

    def vocab_size(config: ConfigDict) -> int:
        key = json.dumps(config_lib.flatten(config.data), sort_keys=True, default=str)
        if key not in cache:
            cache[key] = load_corpus(config, resolve_data_dir(data_dir)).vocab_size
        return cache[key]

    return vocab_size


def point_status(run_dir: Path) -> str:
    """"done", "running", "failed", "interrupted" or "new" (see the module docstring)."""
    if rundir.read_summary(run_dir) is not None:
        return "done"
    if not run_dir.exists():
        return "new"
    if rundir.holder(run_dir) is not None:
        return "running"
    status = read_json(run_dir / rundir.STATUS) or {}
    return "failed" if status.get("status") == "failed" else "interrupted"


def _gpu_count() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def job_placement(jobs: int) -> list[tuple[list[str], dict[str, str]]]:
    """(command prefix, environment) for each of `jobs` slots.

    With several jobs on a GPU host each slot gets one GPU (round robin; slots sharing a
    GPU stop preallocating its memory). On CPU each slot is pinned to its own share of the
    cores (`taskset`); XLA sizes its thread pool from that affinity.
    """
    if jobs == 1:
        return [([], {})]
    gpus = _gpu_count()
    if gpus:
        shared = jobs > gpus
        return [([], {"CUDA_VISIBLE_DEVICES": str(j % gpus), **({"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
                                                                 if shared else {})}) for j in range(jobs)]
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(cores) // jobs)
    out = []
    for j in range(jobs):
        mine = cores[j * per:(j + 1) * per] if len(cores) >= jobs else [cores[j % len(cores)]]
        threads = str(len(mine))
        env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if len(mine) == 1:  # one core: XLA's single-threaded CPU path, no thread pool to contend
            env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
        prefix = ["taskset", "-c", ",".join(map(str, mine))] if shutil.which("taskset") else []
        out.append((prefix, env))
    return out


def point_outcome(run_dir: Path, status: dict) -> str:
    """How a point's process ended, in words: its headline result, or why it did not finish."""
    if status["status"] == "done":
        metric, value = records.headline(rundir.read_summary(run_dir))
        return f"{metric} {value:.6g}"
    if status["status"] == "interrupted":
        return f"interrupted (rerun the sweep to resume it; log: {run_dir / rundir.LOG})"
    return f"FAILED: {status['error']} (log: {run_dir / rundir.LOG})"


def population_command(config_spec: str, workdir: Path, names: list[str], overrides: dict[str, str],
                       data_dir: str | None) -> list[str]:
    """The command that trains the points `names` of the sweep in `workdir` as one population."""
    cmd = [sys.executable, "-m", "rnnjax", "sweep", "--config", config_spec, "--workdir", str(workdir)]
    for name in names:
        cmd += ["--population", name]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return cmd


def unit_command(config_spec: str, workdir: Path, unit: list[Point], overrides: dict[str, str],
                 data_dir: str | None) -> list[str]:
    """The command for one launch unit: a point's `rnnjax train`, or a population's (more than one
    point; `overrides`: the command line's)."""
    if len(unit) > 1:
        return population_command(config_spec, workdir, [p.name for p in unit], overrides, data_dir)
    return train_command(config_spec, workdir / unit[0].name, unit[0].overrides, data_dir)


def run_unit(unit: list[Point], workdir: Path, cmd: list[str], env: dict[str, str], procs: set,
             lock: threading.Lock) -> list[dict]:
    """Run one launch unit's process (`run_point` or `run_group`); each point's status."""
    if len(unit) > 1:
        return run_group(unit, workdir, cmd, env, procs, lock)
    return [run_point(unit[0], workdir / unit[0].name, cmd, env, procs, lock)]


def train_command(config_spec: str, run_dir: Path, overrides: dict[str, str], data_dir: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "rnnjax", "train", "--config", config_spec, "--workdir", str(run_dir)]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    return cmd


def _error_line(log_path: Path) -> str:
    """The line that says why a run failed: its `rnnjax: error:` line, else the last line."""
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("rnnjax: error:"):
            return ln
    return lines[-1] if lines else "no output"


def run_point(point: Point, run_dir: Path, cmd: list[str], env: dict[str, str],
              procs: set, lock: threading.Lock) -> dict:
    """Run one point's training process; record and return its status."""
    status = _started(point, run_dir, cmd)
    with open(run_dir / rundir.LOG, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        rc = _wait(proc, procs, lock)
    return _finished(status, rc, run_dir, lambda: _error_line(run_dir / rundir.LOG))


def run_group(points: list[Point], workdir: Path, cmd: list[str], env: dict[str, str],
              procs: set, lock: threading.Lock) -> list[dict]:
    """Run one population's process (`rnnjax.population`); record and return each member's status.

    A line of its output that starts `[NAME] ` goes (without that prefix) to NAME's train.log,
    any other line to every member's.
    """
    dirs = {p.name: workdir / p.name for p in points}
    statuses = {p.name: _started(p, dirs[p.name], cmd, population=list(dirs)) for p in points}
    errors: dict[str, str] = {}
    logs = {name: open(d / rundir.LOG, "a") for name, d in dirs.items()}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace", env={**os.environ, **env})
        with lock:
            procs.add(proc)
        shared = ""
        for line in proc.stdout:
            name, sep, rest = line[1:].partition("] ") if line.startswith("[") else ("", "", "")
            if sep and name in logs:
                logs[name].write(rest)
                logs[name].flush()
                if rest.startswith("rnnjax: error:"):
                    errors[name] = rest.strip()
                continue
            shared = line.strip() or shared
            for f in logs.values():
                f.write(line)
                f.flush()
        rc = _wait(proc, procs, lock)
    finally:
        for f in logs.values():
            f.close()
    out = []
    for name, status in statuses.items():
        if name in errors and rundir.read_summary(dirs[name]) is None:  # this member stopped alone
            status.update(returncode=rc, finished=time.time(), wall_s=time.time() - status["started"],
                          status="failed", error=errors[name])
            write_json_atomic(dirs[name] / rundir.STATUS, status)
            out.append(status)
        else:  # a member that finished is done whatever became of the others
            done = rundir.read_summary(dirs[name]) is not None
            out.append(_finished(status, 0 if done else rc, dirs[name], lambda: shared or "no output"))
    return out


def _started(point: Point, run_dir: Path, cmd: list[str], **extra) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {"status": "running", "name": point.name, "values": point.values, "command": cmd,
              "host": socket.gethostname(), "started": time.time(), **extra}
    write_json_atomic(run_dir / rundir.STATUS, status)
    return status


def _wait(proc: subprocess.Popen, procs: set, lock: threading.Lock) -> int:
    with lock:
        procs.add(proc)
    rc = proc.wait()
    with lock:
        procs.discard(proc)
    return rc


def _finished(status: dict, rc: int, run_dir: Path, error: Callable[[], str]) -> dict:
    """Record how a point's process ended: done, interrupted (rerunning resumes it) or failed."""
    status.update(returncode=rc, finished=time.time(), wall_s=time.time() - status["started"])
    if rc == 0 and rundir.read_summary(run_dir) is not None:
        status["status"] = "done"
    elif rc == 0 or rc < 0 or rc in (130, 143):  # stopped by a signal (after a checkpoint when rc is 0)
        status["status"] = "interrupted"
    else:
        status.update(status="failed", error=error())
    write_json_atomic(run_dir / rundir.STATUS, status)
    return status


def points_to_run(workdir: Path, points: list[Point], retry_failed: bool = False) -> list[Point]:
    """The points a launcher starts: new and interrupted ones, and failed ones when asked to retry them."""
    wanted = ("new", "interrupted", "failed") if retry_failed else ("new", "interrupted")
    return [p for p in points if point_status(Path(workdir) / p.name) in wanted]


def run_sweep(config_spec: str, workdir: Path, points: list[Point], jobs: int = 1, retry_failed: bool = False,
              data_dir: str | None = None, log: Callable[[str], None] = print, vmap_axes: tuple = (),
              overrides: dict[str, str] | None = None) -> int:
    """Run the points not yet done, `jobs` processes at a time; return the number that failed.

    With `vmap_axes`, the points to run that differ only in those keys go as one population
    process (`rnnjax.population`), given the command line's `overrides`.
    """
    states = {p.name: point_status(workdir / p.name) for p in points}
    todo = points_to_run(workdir, points, retry_failed)
    done = sum(s == "done" for s in states.values())
    elsewhere = [p.name for p in points if states[p.name] == "running"]
    failed_left = [p for p in points if states[p.name] == "failed" and not retry_failed]
    units = population.groups(todo, vmap_axes) if vmap_axes else [[p] for p in todo]
    log(f"sweep: {len(points)} points here, {done} finished (skipped), {len(elsewhere)} running elsewhere, "
        f"{len(failed_left)} failed{' (skipped; --retry-failed reruns them)' if failed_left else ''}, "
        f"{len(todo)} to run" + (f" as {len(units)} populations ({', '.join(vmap_axes)})" if vmap_axes else "")
        + f", {jobs} at a time")
    for p in failed_left:
        log(f"  failed earlier: {p.name}: {_recorded_error(workdir / p.name)}")
    record_launch(workdir, "local", {p.name: f"{socket.gethostname()}:{os.getpid()}" for p in todo})
    placement = job_placement(min(jobs, max(len(units), 1)))
    work: queue.Queue = queue.Queue()
    for unit in units:
        work.put(unit)
    lock = threading.Lock()
    procs: set = set()
    counts = {"started": 0, "finished": 0, "failed": 0}
    start = time.time()

    def worker(slot: int) -> None:
        prefix, env = placement[slot]
        while True:
            try:
                unit = work.get_nowait()
            except queue.Empty:
                return
            with lock:
                for p in unit:
                    note = " (resuming)" if states[p.name] == "interrupted" else ""
                    counts["started"] += 1
                    log(f"[{counts['started']}/{len(todo)}] start {p.name}{note}"
                        + (f" (population of {len(unit)})" if len(unit) > 1 else ""))
            t0 = time.time()
            statuses = run_unit(unit, workdir, prefix + unit_command(config_spec, workdir, unit, overrides or {},
                                                                     data_dir), env, procs, lock)
            with lock:
                for p, status in zip(unit, statuses):
                    counts["finished"] += 1
                    n = counts["finished"]
                    if status["status"] in ("interrupted", "failed"):
                        counts["failed"] += 1
                    eta = (time.time() - start) / n * (len(todo) - n)
                    log(f"done {p.name}: {point_outcome(workdir / p.name, status)} in "
                        f"{format_seconds(time.time() - t0)} | {n}/{len(todo)} run, "
                        f"{done + n - counts['failed']}/{len(points)} finished, ETA {format_seconds(eta)}")

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(len(placement))]
    previous = signal.signal(signal.SIGTERM, raise_interrupt) if threading.current_thread() is \
        threading.main_thread() else None
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        with lock:
            running = list(procs)
            while not work.empty():
                work.get_nowait()
        for proc in running:
            proc.terminate()  # each point checkpoints and exits
        for proc in running:  # wait for the processes, not the threads: on Python 3.11 an interrupted
            try:  # join() can leave a thread looking finished while it still runs
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log(f"a point's training process (pid {proc.pid}) did not stop within 120 s; it is left running")
        for t in threads:
            t.join(5)  # each worker records its point's status
        log("sweep interrupted; run the same command again to resume")
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return counts["failed"] + len(failed_left)


def raise_interrupt(signum, frame) -> None:
    """A SIGTERM handler that stops a launcher the way Ctrl-C does."""
    raise KeyboardInterrupt


def _recorded_error(run_dir: Path) -> str:
    return (read_json(run_dir / rundir.STATUS) or {}).get("error", "?")


def record_sweep(workdir: Path, config_spec: str, overrides: dict[str, str], points: list[Point]) -> None:
    """DIR/sweep.json: the grid and overrides of the runs DIR holds, for later sweeps and `rnnjax report`.

    A sweep into a directory recorded with other overrides, another config file or other
    settings for a point of the same name is refused: the record never stops describing
    the runs. New points are added to it.
    """
    path = Path(workdir) / SWEEP
    old = read_json(path) if path.exists() else None
    if path.exists() and not isinstance(old, dict):
        raise ConfigError(f"{path}: unreadable; it records which sweep this directory holds: restore it or "
                          f"use another --workdir")
    recorded = {p["name"]: p for p in (old or {}).get("points", [])}
    if old:
        def file_and_preset(spec: str) -> str:
            path_part, _, preset = spec.partition(":")
            return f"{Path(path_part).name}:{preset}"

        if file_and_preset(old.get("config", "")) != file_and_preset(config_spec):
            raise ConfigError(f"{path}: this directory holds a sweep of {old.get('config')}, not {config_spec}; "
                              f"use another --workdir")
        if old.get("overrides", {}) != overrides:
            raise ConfigError(f"{path}: this directory's runs were made with overrides {old.get('overrides', {})}, "
                              f"this command gives {overrides}; use another --workdir for a different sweep")
        for p in points:
            if p.name in recorded and recorded[p.name].get("overrides") != p.overrides:
                raise ConfigError(f"{path}: point {p.name} was recorded with {recorded[p.name].get('overrides')}, "
                                  f"now {p.overrides}; use another --workdir for a different sweep")
    for p in points:
        recorded.setdefault(p.name, {"name": p.name, "values": p.values, "overrides": p.overrides})
    keys = list(points[0].values) if points else (old or {}).get("keys", [])
    write_json_atomic(path, {"config": config_spec, "overrides": overrides, "keys": keys,
                             "names": short_names(keys), "points": list(recorded.values()),
                             "launches": (old or {}).get("launches", [])})


def record_launch(workdir: Path, launcher: str, jobs: dict[str, str]) -> None:
    """Add a launch to DIR/sweep.json: which launcher ran which points, under which job ids."""
    path = Path(workdir) / SWEEP
    record = read_json(path)
    launches = record.setdefault("launches", [])
    launches.append({"launcher": launcher, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "jobs": jobs})
    write_json_atomic(path, record)
