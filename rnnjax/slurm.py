"""Sweep points as a SLURM job array, through submitit (`rnnjax sweep --launcher slurm`).

    rnnjax sweep --config FILE --workdir DIR --launcher slurm --partition gpu --gpus-per-point 1 \
        --time-min 240 [--jobs N]

One array task per point that is not done (with `sweep.vmap_axes`, per population of points,
`rnnjax.population`), at most `--jobs` at once. Each task runs the same
`rnnjax train` command the local launcher runs (`launch.train_command`), in the same run
directory, so the directories, `summary.json` files and `rnnjax report` are the same whichever
launcher ran them. SLURM sends SIGUSR2 `signal_delay_s` before a time limit or a preemption
(submitit's `--signal=USR2@90`) to every process of the job step: the training process
checkpoints and exits (`loop.StopSignals`), and submitit calls `PointJob.checkpoint`, which
waits for that (or sends SIGTERM if the signal did not reach it) and requeues the same point,
which resumes from that checkpoint. Job ids go into DIR/sweep.json (`launches`); the logs of submitit
and SLURM into DIR/.submitit/.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from rnnjax import launch, population
from rnnjax.errors import ConfigError
from rnnjax.sweep import Point

LOGS = ".submitit"  # inside the sweep directory
GRACE_S = 15  # how long a signalled training process may take to checkpoint before it is told again
MAX_TIMEOUTS = 20  # requeues after a time limit (preemptions do not count) before a point is given up


class Resources(NamedTuple):
    """What each array task asks SLURM for."""

    partition: str | None = None
    time_min: int = 240
    cpus_per_point: int = 2
    gpus_per_point: int = 0
    mem_gb: float | None = None

    def executor_parameters(self, jobs: int, name: str) -> dict[str, Any]:
        """`submitit.AutoExecutor.update_parameters` keywords (submitit's own names)."""
        params = {"name": name, "timeout_min": self.time_min, "cpus_per_task": self.cpus_per_point,
                  "slurm_array_parallelism": jobs, "nodes": 1, "tasks_per_node": 1}
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.gpus_per_point:
            params["gpus_per_node"] = self.gpus_per_point
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        return params

    def describe(self, count: int, jobs: int) -> str:
        """The sbatch request `--dry-run` prints for `count` points."""
        flags = [f"--array=0-{count - 1}%{min(count, jobs)}", f"--time={self.time_min}",
                 f"--cpus-per-task={self.cpus_per_point}", "--signal=USR2@90", "--nodes=1", "--ntasks-per-node=1"]
        flags += [f"--partition={self.partition}"] if self.partition else []
        flags += [f"--gpus-per-node={self.gpus_per_point}"] if self.gpus_per_point else []
        flags += [f"--mem={self.mem_gb:g}GB"] if self.mem_gb else []
        return "sbatch " + " ".join(flags)


class PointJob:
    """One point, or one population of points (`sweep.vmap_axes`), on a SLURM node: its training
    process, stopped with a checkpoint and requeued on preemption.

    submitit pickles this object into the job; `checkpoint` is submitit's hook, called on the node
    when SLURM warns of a time limit or preemption, and returns the submission that continues it.
    """

    def __init__(self, points: list[Point], workdir: Path, cmd: list[str]):
        self.points, self.workdir, self.cmd = points, Path(workdir), cmd
        self._procs: set = set()
        self._lock = threading.Lock()

    def __call__(self) -> list[dict]:
        return launch.run_unit(self.points, self.workdir, self.cmd, {}, self._procs, self._lock)

    def checkpoint(self, *args: Any, **kwargs: Any):
        import submitit

        with self._lock:
            running = list(self._procs)
        for proc in running:
            # SLURM signalled every process of the step, so the run is already writing its checkpoint;
            # if the signal did not reach it (only this process was told), SIGTERM does the same.
            if not _exited(proc.pid, GRACE_S):
                proc.terminate()  # rnnjax train finishes its step, writes a checkpoint and exits 0
                if not _exited(proc.pid, 60):
                    proc.kill()  # its newest complete checkpoint is still there to resume from
                    _exited(proc.pid, 10)
        return submitit.helpers.DelayedSubmission(PointJob(self.points, self.workdir, self.cmd))

    def __getstate__(self) -> dict:
        return {"points": self.points, "workdir": self.workdir, "cmd": self.cmd}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["points"], state["workdir"], state["cmd"])


def _exited(pid: int, timeout: float) -> bool:
    """Wait up to `timeout` s for child `pid` to exit, reaping it. `checkpoint` runs in a signal handler that
    interrupted `Popen.wait` in the same thread, which holds the Popen's wait lock: so `os.waitpid`, not `wait`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return True
        except ChildProcessError:  # reaped already
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def executor(workdir: Path, resources: Resources, jobs: int, cluster: str = "slurm"):
    """A submitit executor writing its scripts and logs under DIR/.submitit (`cluster`: "slurm", or
    "local" for submitit's local stand-in that runs the same jobs as processes on this machine)."""
    try:
        import submitit
    except ImportError:
        raise ConfigError("--launcher slurm needs submitit: pip install 'rnnjax[slurm]'") from None
    try:
        ex = submitit.AutoExecutor(folder=Path(workdir) / LOGS / "%j", cluster=cluster,
                                   slurm_max_num_timeout=MAX_TIMEOUTS)
    except RuntimeError as e:  # e.g. no srun: not on a SLURM login node
        raise ConfigError(f"--launcher slurm: {e}") from None
    ex.update_parameters(**resources.executor_parameters(jobs, f"rnnjax-{Path(workdir).name}"))
    return ex


def submit(ex, config_spec: str, workdir: Path, points: list[Point], retry_failed: bool = False,
           data_dir: str | None = None, log=print, vmap_axes: tuple = (), overrides: dict[str, str] | None = None
           ) -> list:
    """Submit every point not yet done as one array job, a task per point (with `vmap_axes`, a task per
    population, given the command line's `overrides`); return the submitit jobs."""
    todo = launch.points_to_run(workdir, points, retry_failed)
    if not todo:
        log(f"sweep: all {len(points)} points are done or running elsewhere; nothing submitted")
        return []
    units = population.groups(todo, vmap_axes) if vmap_axes else [[p] for p in todo]
    jobs_ = [PointJob(unit, workdir, launch.unit_command(config_spec, workdir, unit, overrides or {}, data_dir))
             for unit in units]
    with ex.batch():
        submitted = [ex.submit(job) for job in jobs_]
    launch.record_launch(workdir, "slurm", {p.name: j.job_id for unit, j in zip(units, submitted) for p in unit})
    what = f"{len(todo)} of {len(points)} points" + (f" ({len(units)} populations)" if vmap_axes else "")
    log(f"sweep: submitted {what} as SLURM job {submitted[0].job_id.split('_')[0]} "
        f"(logs in {Path(workdir) / LOGS}); when they finish: rnnjax report {workdir}")
    return submitted
