"""Data parallelism over every device JAX sees, on one host or many, through `jax.sharding`.

    parallel.initialize(coordinator, num_processes, process_id)   # multi-host only; first
    layout = parallel.make_layout(config)                 # 1-D mesh with axis "data"
    state = parallel.place_state(layout, state)           # params, optimizer, step replicated;
                                                          # RNN carry split by batch rows
    new_carry = parallel.carry_maker(layout, lm.initial_carry)   # zeros made on the devices
    batch = parallel.place_batch(layout, rows_fn)         # rows_fn(slice) -> this process's rows

The jitted train step is unchanged: its inputs carry `NamedSharding`s and XLA's SPMD
partitioner splits the batch and inserts the gradient all-reduce. Dropout masks are drawn
for the global batch inside the step, and with `jax_threefry_partitionable` (the default)
their bits do not depend on how the batch is split. Sums over the batch are reduced in a
different order on different device counts, so losses agree to float rounding, not bit for bit.
"""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from rnnjax.config import ConfigDict
from rnnjax.errors import ConfigError

DATA = "data"  # the mesh axis the batch dimension is split over


class Layout(NamedTuple):
    """A run's device mesh and where its arrays live on it."""

    mesh: Mesh
    rows: NamedSharding  # leading (batch) dimension split over DATA, the rest whole
    replicated: NamedSharding  # a full copy on every device
    local_rows: slice  # the rows of a global batch that this process's devices hold
    batch_size: int  # global batch


def launched_multi_process() -> bool:
    """Whether a launcher started several processes of this run (`srun` with several tasks, `mpirun`)."""
    env = os.environ
    return int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False) -> bool:
    """Join a multi-process run with `jax.distributed.initialize`; must come before any JAX work.

    Explicit arguments win; otherwise JAX detects SLURM, Open MPI or Cloud TPU itself (`auto`,
    or implied under `srun` / `mpirun` with several tasks). Returns whether the run is
    multi-process; a plain launch (one process, e.g. one task of a SLURM array) does nothing.
    """
    explicit = (coordinator, num_processes, process_id) != (None, None, None)
    if not (explicit or auto or launched_multi_process()):
        return False
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True


def is_main_process() -> bool:
    """Process 0 writes logs, summaries and result files; the others only compute."""
    return jax.process_index() == 0


def memory_limit() -> tuple[int, str]:
    """(bytes one device can hold, what it is): an accelerator's allocator limit, or the host's RAM."""
    device = jax.local_devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.device_kind} device"
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "host"


def sync(name: str) -> None:
    """Wait until every process of a multi-process run reaches the point called `name`."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def select_devices(num_devices: int) -> list:
    """`num_devices` devices (0: all), the same number from every process, in process order."""
    available = jax.device_count()
    n = num_devices or available
    procs = jax.process_count()
    if n > available or n % procs:
        raise ConfigError(f"config key 'parallel.num_devices' = {num_devices}: {available} devices visible "
                          f"over {procs} process(es); expected 0 (all) or a multiple of {procs} up to {available}")
    per_process = n // procs
    return [d for p in range(procs) for d in [d for d in jax.devices() if d.process_index == p][:per_process]]


def make_layout(config: ConfigDict) -> Layout:
    """The mesh and shardings for `config`'s global batch (`train.batch_size`)."""
    devices = select_devices(config.parallel.num_devices)
    batch_size = config.train.batch_size
    if batch_size % len(devices):
        raise ConfigError(f"config key 'train.batch_size' = {batch_size} is not divisible by the {len(devices)} "
                          f"devices it is split over (parallel.num_devices = {config.parallel.num_devices})")
    mesh = jax.make_mesh((len(devices),), (DATA,), axis_types=(AxisType.Auto,), devices=devices)
    rows = NamedSharding(mesh, PartitionSpec(DATA))
    spans = [index[0].indices(batch_size) for index in rows.addressable_devices_indices_map((batch_size,)).values()]
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    if (hi - lo) * jax.process_count() != batch_size:
        raise RuntimeError(f"process {jax.process_index()}'s devices hold rows that are not contiguous")
    return Layout(mesh, rows, NamedSharding(mesh, PartitionSpec()), slice(lo, hi), batch_size)


def state_shardings(layout: Layout, state: Any) -> Any:
    """Shardings for a TrainState (or its abstract shape): all replicated but the carry's rows."""
    shardings = jax.tree.map(lambda _: layout.replicated, state._replace(carry=None))
    return shardings._replace(carry=jax.tree.map(lambda _: layout.rows, state.carry))


def _put(x: Any, sharding: NamedSharding) -> jax.Array:
    """`jax.device_put` from host values, which also works when the mesh spans processes."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
    return jax.device_put(np.asarray(x), sharding)


def place_state(layout: Layout, state: Any) -> Any:
    """Put a TrainState on the mesh (every process passes the same values)."""
    return jax.tree.map(_put, state, state_shardings(layout, state))


def replicate(layout: Layout, tree: Any) -> Any:
    """A full copy of `tree` (arrays or PRNG keys) on every device of the mesh."""
    return jax.tree.map(lambda x: _put(x, layout.replicated), tree)


def carry_maker(layout: Layout, initial_carry: Callable[[int], Any]) -> Callable[[], Any]:
    """A jitted `() -> carry` for the global batch, created on the devices already split by rows."""

    def fresh() -> Any:
        return initial_carry(layout.batch_size)

    return jax.jit(fresh, out_shardings=jax.tree.map(lambda _: layout.rows, jax.eval_shape(fresh)))


def place_batch(layout: Layout, rows_fn: Callable[[slice], Any]) -> Any:
    """A global batch built from this process's rows only, each device's shard sent to it directly.

    `rows_fn(rows)` returns a pytree of host arrays holding rows `rows` of the global batch.
    """
    local = rows_fn(layout.local_rows)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(layout.rows, x, (layout.batch_size, *x.shape[1:])), local)


def on_one_device(abstract: Any) -> Any:
    """Shape/dtype leaves placed on this process's first device: a restore target that fits
    any checkpoint, whatever mesh wrote it (Orbax reshards into the target's placement)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)


def local_copy(tree: Any) -> Any:
    """One addressable replica of replicated arrays, e.g. parameters for evaluation on one device."""
    return jax.tree.map(lambda x: x.addressable_data(0), tree)
