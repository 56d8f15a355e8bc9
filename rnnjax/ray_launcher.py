"""Sweep points as Ray tasks on a running Ray cluster (`rnnjax sweep --launcher ray`).

    ray start --head --port 6379                # on one machine
    ray start --address HEAD:6379               # on each other machine
    rnnjax sweep --config FILE --workdir DIR --launcher ray --ray-address HEAD:6379 --cpus-per-point 2 \
        [--gpus-per-point 1]

One Ray task per point that is not done (with `sweep.vmap_axes`, per population of points,
`rnnjax.population`), asking for `--cpus-per-point` CPUs and `--gpus-per-point`
GPUs; the cluster's free resources decide how many run at once. Each task runs the same `rnnjax
train` command as the local launcher (`launch.run_point`) in the same run directory, so the run
directories, `summary.json` files and `rnnjax report` are the same whichever launcher ran them; the
sweep directory must be on a filesystem every node sees at the same path, and rnnjax installed on
every node. A task whose worker or node dies, or whose training process is killed, is retried (up
to MAX_RETRIES times) and resumes from the point's newest checkpoint. The command waits for the
tasks, printing each point's result; Ctrl-C cancels them (each training process checkpoints and
exits) and the same command resumes.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, NamedTuple

from rnnjax import launch, population, records, rundir
from rnnjax.errors import ConfigError
from rnnjax.progress import format_seconds
from rnnjax.sweep import Point

MAX_RETRIES = 5  # attempts after the first, for a dead worker or node or a killed training process
CANCEL_WAIT_S = 120  # how long Ctrl-C waits for the cancelled points to checkpoint


class PointInterrupted(RuntimeError):
    """A point's training process was stopped by a signal while its worker lived on; Ray retries the task."""


class Resources(NamedTuple):
    """What each point's task asks Ray for."""

    cpus_per_point: float = 2
    gpus_per_point: float = 0

    def task_options(self) -> dict:
        """`ray.remote(...).options` keywords."""
        return {"num_cpus": self.cpus_per_point, "num_gpus": self.gpus_per_point, "max_retries": MAX_RETRIES,
                "retry_exceptions": [PointInterrupted]}

    def describe(self, count: int) -> str:
        """What `--dry-run` prints for `count` points."""
        return (f"{count} Ray tasks of {self.cpus_per_point:g} CPUs and {self.gpus_per_point:g} GPUs each "
                f"(max_retries={MAX_RETRIES})")


def cluster_address(address: str | None) -> str:
    """The cluster to run on: `address` (--ray-address), else $RAY_ADDRESS. Checked before the sweep
    writes anything; no cluster of its own is started (its points would die with this command)."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("--launcher ray needs Ray: pip install 'rnnjax[ray]'")
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError("--launcher ray runs on a running Ray cluster: start one with `ray start --head` and "
                          "name it with --ray-address HOST:6379 (or RAY_ADDRESS; 'auto': the one on this machine)")
    host, colon, port = address.rpartition(":")
    if colon and port.isdigit() and "://" not in address:  # not 'auto' nor a ray:// client address
        try:  # ray.init would retry an address nobody listens on for many minutes
            socket.create_connection((host, int(port)), timeout=10).close()
        except OSError as e:
            raise ConfigError(f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e}); start "
                              f"one with `ray start --head --port {port}`") from None
    return address


def connect(address: str) -> ModuleType:
    """`ray`, connected to the cluster at `address`."""
    import ray

    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError) as e:
        why = str(e).strip("'\" \n").splitlines() or [type(e).__name__]
        raise ConfigError(f"--ray-address {address}: {why[0]}") from None
    return ray


def run_task(unit: list[Point], workdir: Path, config_spec: str, data_dir: str | None, env: dict[str, str],
             overrides: dict[str, str]) -> list[dict]:
    """One point, or one population of points (`sweep.vmap_axes`), on a Ray worker: its training
    process, as `launch.run_point` / `launch.run_group` run it; returns each point's status.

    The process is started with `setpriv --pdeathsig KILL`, so it dies with this worker even where Ray
    does not end a killed worker's children, releasing the run directories for the retry. The launch
    runs in a thread: `ray.cancel` (KeyboardInterrupt) or a SIGTERM to the worker (SystemExit) interrupts
    this main thread, which then stops the training process with SIGTERM (it checkpoints and exits). The
    main thread polls an Event rather than joining: Python 3.11 takes a thread interrupted in `join` for
    finished.
    """
    for p in unit:
        _wait_released(workdir / p.name)
    guard = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
    procs: set = set()
    lock = threading.Lock()
    outcome: list = []  # the statuses, or what the launch raised
    finished = threading.Event()

    def run() -> None:
        try:
            cmd = guard + launch.unit_command(config_spec, workdir, unit, overrides, data_dir)
            outcome.append(launch.run_unit(unit, workdir, cmd, env, procs, lock))
        except Exception as e:
            outcome.append(e)
        finally:
            finished.set()

    threading.Thread(target=run, daemon=True).start()
    try:
        while not finished.is_set():
            time.sleep(0.5)
    except BaseException:
        _stop(finished, procs, lock)
        raise
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    stopped = [s["name"] for s in outcome[0] if s["status"] == "interrupted"]
    if stopped:
        raise PointInterrupted(f"{', '.join(stopped)}: the training process stopped before the end (log: "
                               f"{workdir / stopped[0] / rundir.LOG})")
    return outcome[0]


def _wait_released(run_dir: Path) -> None:
    """Wait while another process holds the run directory: a killed attempt's training process still
    ending, or another sweep running this point (then it is done when this attempt starts)."""
    while rundir.holder(run_dir) is not None:
        time.sleep(1)


def _stop(finished: threading.Event, procs: set, lock: threading.Lock) -> None:
    """SIGTERM each training process once (a second one would stop it before its checkpoint); wait for them."""
    stopped: set = set()
    while not finished.is_set():
        with lock:
            running = procs - stopped
        for proc in running:
            proc.terminate()
        stopped |= running
        time.sleep(0.5)


def submit(ray: ModuleType, config_spec: str, workdir: Path, points: list[Point], resources: Resources,
           retry_failed: bool = False, data_dir: str | None = None, log: Callable[[str], None] = print,
           vmap_axes: tuple = (), overrides: dict[str, str] | None = None) -> dict:
    """Start a task for every point not yet done (with `vmap_axes`, for every population of them, given
    the command line's `overrides`) and record their task ids; return {ObjectRef: [Point, ...]}."""
    workdir = Path(workdir).resolve()  # a Ray worker's working directory is not this one
    path, colon, preset = config_spec.partition(":")
    config_spec = f"{Path(path).resolve()}{colon}{preset}"
    data_dir = str(Path(data_dir).resolve()) if data_dir else None
    env = {} if resources.gpus_per_point else {"CUDA_VISIBLE_DEVICES": ""}  # newer Ray leaves GPUs visible at 0
    states = [launch.point_status(workdir / p.name) for p in points]
    todo = launch.points_to_run(workdir, points, retry_failed)
    remote = ray.remote(run_task).options(**resources.task_options())
    units = population.groups(todo, vmap_axes) if vmap_axes else [[p] for p in todo]
    tasks = {remote.remote(unit, workdir, config_spec, data_dir, env, overrides or {}): unit for unit in units}
    launch.record_launch(workdir, "ray", {p.name: ref.task_id().hex() for ref, unit in tasks.items() for p in unit})
    failed_left = 0 if retry_failed else states.count("failed")
    log(f"sweep: {len(points)} points here, {states.count('done')} finished (skipped), {states.count('running')} "
        f"running elsewhere, {failed_left} failed{' (skipped; --retry-failed reruns them)' if failed_left else ''}, "
        f"{len(todo)} submitted as {resources.describe(len(units))}"
        + (f" ({len(units)} populations)" if vmap_axes else ""))
    return tasks


def wait(ray: ModuleType, workdir: Path, tasks: dict, log: Callable[[str], None] = print) -> int:
    """Wait for the tasks, logging each point's result as it ends; return how many did not finish.

    Ctrl-C (or SIGTERM) cancels the tasks left; their training processes checkpoint and exit.
    """
    pending = dict(tasks)
    start, failed = time.time(), 0
    previous = signal.signal(signal.SIGTERM, launch.raise_interrupt) if threading.current_thread() is \
        threading.main_thread() else None
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                unit = pending.pop(ref)
                n = len(tasks) - len(pending)
                eta = (time.time() - start) / n * len(pending)
                for point, (what, ok) in zip(unit, _outcomes(ray, ref, Path(workdir), unit)):
                    failed += not ok
                    log(f"done {point.name}: {what} | {n}/{len(tasks)} tasks run, {failed} points not finished, "
                        f"ETA {format_seconds(eta)}")
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)
        # a cancelled task ends once its training process has checkpointed and exited; wait for that, as
        # disconnecting ends this job's workers, and with them their training processes
        ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
        log("sweep interrupted; run the same command again to resume")
        raise SystemExit(130) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed


def run_sweep(address: str, config_spec: str, workdir: Path, points: list[Point], resources: Resources,
              retry_failed: bool = False, data_dir: str | None = None, log: Callable[[str], None] = print,
              vmap_axes: tuple = (), overrides: dict[str, str] | None = None) -> int:
    """Run the points not yet done as Ray tasks on the cluster at `address` and wait for them; return how
    many failed, counting those that failed before and were not retried (as `launch.run_sweep`)."""
    ray = connect(address)
    try:
        failed_left = 0 if retry_failed else sum(launch.point_status(Path(workdir) / p.name) == "failed"
                                                 for p in points)
        tasks = submit(ray, config_spec, workdir, points, resources, retry_failed, data_dir, log, vmap_axes, overrides)
        return wait(ray, workdir, tasks, log) + failed_left
    finally:
        ray.shutdown()


def _outcomes(ray: ModuleType, ref, workdir: Path, unit: list[Point]) -> list[tuple[str, bool]]:
    """What a finished task's points came to, in words, and whether each finished."""
    log_paths = [workdir / p.name / rundir.LOG for p in unit]
    try:
        statuses = ray.get(ref)
    except PointInterrupted:
        return [(f"interrupted, retries used up (rerun the sweep to resume it; log: {log})", False) for log in log_paths]
    except Exception as e:  # the worker or node died once more than the task may be retried
        line = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        return [(f"not finished: {line} (rerun the sweep to resume it; log: {log})", False) for log in log_paths]
    out = []
    for p, status, log in zip(unit, statuses, log_paths):
        summary = rundir.read_summary(workdir / p.name)
        if status["status"] != "done":
            out.append((f"FAILED: {status['error']} (log: {log})", False))
        elif summary is None:
            out.append((f"finished on {status['host']}, but {workdir / p.name / rundir.SUMMARY} is not readable "
                        f"here: the sweep directory must be on a filesystem every Ray node shares, at the same path",
                        False))
        else:
            metric, value = records.headline(summary)
            out.append((f"{metric} {value:.6g} in {format_seconds(status['wall_s'])}", True))
    return out
