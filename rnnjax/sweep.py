"""Sweeps: a grid of config points, one run directory each, every point a `rnnjax train` process.

A config file declares its grid beside `get_config()`, as big_vision and Flax examples do:

    from rnnjax.sweep import product, sweep, zipped

    def get_sweep():
        return product(
            sweep("config.model.cell", ["rnn_tanh", "gru", "lstm"]),
            sweep("config.model.num_layers", [1, 2]),
            zipped(sweep("config.model.dropout", [0.0, 0.5]), sweep("config.train.learning_rate", [1.0, 0.7])),
            sweep("config.seed", [0, 1, 2]),
        )

`rnnjax sweep --config FILE[:PRESET] --workdir DIR` runs each point as

    python -m rnnjax train --config FILE[:PRESET] --workdir DIR/NAME --config.KEY=VALUE ...

where NAME reads like `cell=gru,layers=2,dropout=0.5,seed=0` and depends only on the point.
A point whose `summary.json` exists is skipped; one that was interrupted is started again
with the same command (training resumes from its checkpoints); one that failed is left,
with its error in `DIR/NAME/status.json`, until `--retry-failed`. `--shard I/N` runs points
I, I+N, I+2N, ... so independent hosts can split a sweep with no coordinator; results
merge from the run directories (`rnnjax report DIR`).
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import json
import math
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from rnnjax import config as config_lib
from rnnjax.config import ConfigDict
from rnnjax.errors import ConfigError
from rnnjax.progress import format_seconds
from rnnjax.files import write_json_atomic

Grid = list  # list[dict[str, Any]]: one dict of {"config.KEY": value} per point

PREFIX = "config."
# Short names used in run directory names; other keys go by their last component.
ALIASES = {
    "model.cell": "cell",
    "model.num_layers": "layers",
    "model.dropout": "dropout",
    "model.hidden_size": "hidden",
    "model.embed_size": "embed",
    "train.learning_rate": "lr",
    "train.optimizer": "opt",
    "train.batch_size": "batch",
    "train.seq_len": "bptt",
    "data.corpus": "corpus",
    "seed": "seed",
}
MATCH_TOLERANCE = 0.02  # sweep.match_params: relative parameter-count difference allowed


# ---- grid definitions (used inside config files) -------------------------------------------

def sweep(key: str, values) -> Grid:
    """One axis: `key` (written `config.model.cell`) takes each of `values` in turn."""
    if not isinstance(key, str) or not key.startswith(PREFIX):
        raise ConfigError(f"sweep key {key!r} must be written {PREFIX}KEY, e.g. 'config.model.cell'")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"sweep axis {key!r}: values must be a list, got {values!r}")
    values = list(values)
    if not values:
        raise ConfigError(f"sweep axis {key!r} is empty")
    return [{key: v} for v in values]


def _merge(points: tuple[dict, ...]) -> dict:
    out: dict = {}
    for p in points:
        for key in p:
            if key in out:
                raise ConfigError(f"sweep key {key!r} appears in more than one axis")
        out.update(p)
    return out


def product(*grids: Grid) -> Grid:
    """Every combination of the grids' points (the first grid varies slowest)."""
    return [_merge(combo) for combo in itertools.product(*grids)]


def zipped(*grids: Grid) -> Grid:
    """The grids' points side by side; all grids must have the same length."""
    lengths = [len(g) for g in grids]
    if len(set(lengths)) > 1:
        keys = [sorted(g[0]) for g in grids]
        raise ConfigError(f"zipped sweep axes have different lengths {lengths}: {keys}")
    return [_merge(combo) for combo in zip(*grids)]


# ---- expansion --------------------------------------------------------------------------

class Point(NamedTuple):
    index: int
    name: str  # run directory name, e.g. "cell=gru,layers=2,dropout=0.5,seed=0"
    values: dict  # {"model.cell": "gru", ...}: the swept values
    overrides: dict  # {"model.cell": "gru", "model.hidden_size": "173", ...}: --config.KEY=VALUE texts


def override_text(value: Any) -> str:
    """The `--config.KEY=VALUE` text that `config.apply_overrides` parses back into `value`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(tuple(value) if isinstance(value, list) else value)


def _name_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "-".join(_name_value(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+\-]", "_", text)


def short_names(keys: list[str]) -> dict[str, str]:
    """{"model.cell": "cell", "train.weight_decay": "weight_decay", ...}; full keys where short ones clash."""
    short = {k: ALIASES.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def run_name(values: dict, names: dict[str, str]) -> str:
    return ",".join(f"{names[k]}={_name_value(v)}" for k, v in values.items())


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"rnnjax_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_grid(config_spec: str) -> Grid:
    """The points `get_sweep()` of the config file returns, checked for shape."""
    path = Path(config_spec.partition(":")[0])
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    module = _import(path)
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"config file {str(path)!r} defines no get_sweep()")
    try:
        grid = module.get_sweep()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(grid, list) or not grid or not all(isinstance(p, dict) for p in grid):
        raise ConfigError(f"{path}: get_sweep() must return a non-empty list of points (use sweep/product/zipped)")
    return grid


def expand(base: ConfigDict, grid: Grid, overrides: dict[str, str], where: str = "sweep",
           vocab_size: Callable[[ConfigDict], int] | None = None) -> list[Point]:
    """One `Point` per grid entry, each checked by building and validating its config.

    `overrides` (from the command line) apply to every point and may not touch a swept key.
    With `sweep.match_params`, `vocab_size(config)` gives the vocabulary the parameter
    counts are computed for.
    """
    keys: list[str] = []
    for p in grid:
        for k in p:
            if k not in keys:
                keys.append(k)
    known = config_lib.flatten(base)
    for k in keys:
        if not k.startswith(PREFIX):
            raise ConfigError(f"{where}: sweep key {k!r} must be written {PREFIX}KEY")
        bare = k[len(PREFIX):]
        if bare not in known:
            close = difflib.get_close_matches(bare, sorted(known), n=1, cutoff=0.5)
            hint = f" (did you mean {PREFIX + close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown sweep key {k!r}{hint}")
        if bare in overrides:
            raise ConfigError(f"{where}: --config.{bare} overrides a swept key; change the sweep instead")
    names = short_names([k[len(PREFIX):] for k in keys])
    points, seen = [], {}
    for i, p in enumerate(grid):
        if list(p) != keys:
            missing = [k for k in keys if k not in p]
            raise ConfigError(f"{where}: point {i} lacks sweep keys {missing}; every point must set the same keys")
        values = {k[len(PREFIX):]: v for k, v in p.items()}
        point_overrides = {**overrides, **{k: override_text(v) for k, v in values.items()}}
        config = config_lib.apply_overrides(base, point_overrides)
        config_lib.validate(config)
        if config.sweep.match_params:
            hidden = matched_hidden_size(config, vocab_size(config))
            point_overrides["model.hidden_size"] = str(hidden)
        name = run_name(values, names)
        if name in seen:
            raise ConfigError(f"{where}: points {seen[name]} and {i} have the same run name {name!r}")
        seen[name] = i
        points.append(Point(i, name, values, point_overrides))
    return points


# ---- parameter matching ------------------------------------------------------------------

def param_count(config: ConfigDict, vocab_size: int) -> int:
    """Parameters of the model `config` describes, from shapes only (nothing is allocated)."""
    import jax

    from rnnjax.model import make_lm

    shapes = jax.eval_shape(make_lm(config, vocab_size).init, jax.random.key(0))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))


def matched_hidden_size(config: ConfigDict, vocab_size: int) -> int:
    """The hidden size giving `config.model.cell` the parameter count of an LSTM at `model.hidden_size`.

    Counts grow with the hidden size, so a bisection finds the closest; a miss of more than
    2% (e.g. tiny models) is an error rather than a silently unfair comparison.
    """
    if config.model.layer_sizes:
        raise ConfigError("sweep.match_params needs model.layer_sizes = () (one hidden size for every layer)")
    target = param_count(config_lib.apply_overrides(config, {"model.cell": "lstm"}), vocab_size)
    if config.model.cell == "lstm":
        return config.model.hidden_size

    def count(h: int) -> int:
        return param_count(config_lib.apply_overrides(config, {"model.hidden_size": str(h)}), vocab_size)

    lo, hi = 1, max(2, config.model.hidden_size)
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda h: abs(count(h) - target))
    miss = abs(count(best) - target) / target
    if miss > MATCH_TOLERANCE:
        raise ConfigError(f"sweep.match_params: no hidden size gives cell {config.model.cell!r} within 2% of the "
                          f"LSTM's {target:,} parameters (closest: hidden {best}, {100 * miss:.1f}% off)")
    return best


def corpus_vocab_size(data_dir: Path | None) -> Callable[[ConfigDict], int]:
    """`vocab_size(config)`, loading each distinct corpus once."""
    from rnnjax.data import load_corpus, resolve_data_dir

    cache: dict[str, int] = {}

    def vocab_size(config: ConfigDict) -> int:
        key = json.dumps(config_lib.flatten(config.data), sort_keys=True, default=str)
        if key not in cache:
            cache[key] = load_corpus(config, resolve_data_dir(data_dir)).vocab_size
        return cache[key]

    return vocab_size


# ---- selection and state -----------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not m or not int(m[1]) < int(m[2]):
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def shard(points: list[Point], index: int, count: int) -> list[Point]:
    """Points index, index + count, ...: the shards of one sweep partition its points."""
    return points[index::count]


def point_status(run_dir: Path) -> str:
    """"done" (summary.json), "failed", "interrupted" (started, never finished) or "new"."""
    if (run_dir / "summary.json").is_file():
        return "done"
    status_file = run_dir / "status.json"
    if status_file.is_file():
        try:
            status = json.loads(status_file.read_text()).get("status")
        except json.JSONDecodeError:
            status = None
        return "failed" if status == "failed" else "interrupted"
    return "interrupted" if run_dir.exists() else "new"


# ---- running -----------------------------------------------------------------------------

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
    run_dir.mkdir(parents=True, exist_ok=True)
    status = {"status": "running", "name": point.name, "values": point.values, "command": cmd,
              "host": socket.gethostname(), "started": time.time()}
    write_json_atomic(run_dir / "status.json", status)
    log_path = run_dir / "train.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        with lock:
            procs.add(proc)
        rc = proc.wait()
        with lock:
            procs.discard(proc)
    status.update(returncode=rc, finished=time.time(), wall_s=time.time() - status["started"])
    if rc == 0 and (run_dir / "summary.json").is_file():
        status["status"] = "done"
    else:
        status.update(status="failed", error=_error_line(log_path))
    write_json_atomic(run_dir / "status.json", status)
    return status


def run_sweep(config_spec: str, workdir: Path, points: list[Point], jobs: int = 1, retry_failed: bool = False,
              data_dir: str | None = None, log: Callable[[str], None] = print) -> int:
    """Run the points not yet done, `jobs` at a time; return the number that failed."""
    states = {p.name: point_status(workdir / p.name) for p in points}
    todo = [p for p in points if states[p.name] in ("new", "interrupted")
            or (retry_failed and states[p.name] == "failed")]
    done = sum(s == "done" for s in states.values())
    failed_left = [p for p in points if states[p.name] == "failed" and not retry_failed]
    log(f"sweep: {len(points)} points here, {done} finished (skipped), {len(failed_left)} failed"
        f"{' (skipped; --retry-failed reruns them)' if failed_left else ''}, {len(todo)} to run, {jobs} at a time")
    for p in failed_left:
        log(f"  failed earlier: {p.name}: {_recorded_error(workdir / p.name)}")
    placement = job_placement(min(jobs, max(len(todo), 1)))
    work: queue.Queue = queue.Queue()
    for p in todo:
        work.put(p)
    lock = threading.Lock()
    procs: set = set()
    counts = {"started": 0, "finished": 0, "failed": 0}
    start = time.time()

    def worker(slot: int) -> None:
        prefix, env = placement[slot]
        while True:
            try:
                p = work.get_nowait()
            except queue.Empty:
                return
            run_dir = workdir / p.name
            with lock:
                note = " (resuming)" if states[p.name] == "interrupted" else ""
                counts["started"] += 1
                log(f"[{counts['started']}/{len(todo)}] start {p.name}{note}")
            t0 = time.time()
            status = run_point(p, run_dir, prefix + train_command(config_spec, run_dir, p.overrides, data_dir),
                               env, procs, lock)
            with lock:
                counts["finished"] += 1
                n = counts["finished"]
                eta = (time.time() - start) / n * (len(todo) - n)
                if status["status"] == "done":
                    summary = json.loads((run_dir / "summary.json").read_text())
                    what = f"test ppl {summary['test_ppl']:.2f}"
                else:
                    counts["failed"] += 1
                    what = f"FAILED: {status['error']} (log: {run_dir / 'train.log'})"
                log(f"done {p.name}: {what} in {format_seconds(time.time() - t0)} | "
                    f"{n}/{len(todo)} run, {done + n - counts['failed']}/{len(points)} finished, "
                    f"ETA {format_seconds(eta)}")

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(len(placement))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        with lock:
            for proc in procs:
                proc.terminate()
        log("sweep interrupted; run the same command again to resume")
        raise SystemExit(130) from None
    return counts["failed"] + len(failed_left)


def _recorded_error(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("error", "?")
    except (OSError, json.JSONDecodeError):
        return "?"


def write_sweep_file(workdir: Path, config_spec: str, overrides: dict[str, str], points: list[Point]) -> None:
    """DIR/sweep.json: the definition every shard expands to, for `rnnjax report`."""
    keys = list(points[0].values) if points else []
    write_json_atomic(workdir / "sweep.json", {
        "config": config_spec, "overrides": overrides, "keys": keys, "names": short_names(keys),
        "points": [{"name": p.name, "values": p.values, "overrides": p.overrides} for p in points],
    })
