"""A population: sweep points that differ only in `sweep.vmap_axes` (seed, learning rate) trained
as one jitted program, `jax.vmap` over a leading member axis of params, optimizer state, carry
and keys.

    for step in range(start, total):                 # all members in lockstep (`loop.train_members`)
        states, metrics = vmap(train_step)(states, stacked batches, keys, learning rates, active)
        for each active member: record / evaluate / checkpoint / finish when due (`loop.due`)

Each member keeps its own run directory with the files a separate run writes (config.json,
metrics.jsonl, checkpoints/, summary.json), and its checkpoints are the ones that run would
write: the group saves them together, at the same steps, and resumes from the newest step every
member holds, bit for bit. A member's learning rate multiplies the schedule of a unit learning
rate, so its updates equal the separate run's to float rounding. A member whose loss turns
non-finite stops alone (`train.on_nonfinite=stop`; a rollback would break the lockstep and is
refused), and one that early-stops (`train.patience`) finishes alone; both are then frozen and
the others go on. Members are evaluated one after another on the host. The host loop is
`loop.train_members`, the one every run goes through; this module gives it the vmapped
`program`.

The sweep launcher (`rnnjax sweep` with `sweep.vmap_axes`) runs each group as
`rnnjax sweep ... --population NAME --population NAME ...` and routes every `[NAME] ` line of its output to
that member's train.log.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import config_keys, loop, optim, steps
from rnnjax.config import ConfigDict, flatten
from rnnjax.errors import ConfigError, DataError
from rnnjax.rundir import Run


def group_key(values: dict, axes: tuple[str, ...]) -> tuple:
    """What members of one population share: a point's swept values outside `axes`."""
    return tuple(sorted((k, repr(v)) for k, v in values.items() if k not in axes))


def groups(points: list, axes: tuple[str, ...]) -> list[list]:
    """Sweep points (`sweep.Point`) in populations: those equal outside `axes`, in grid order."""
    out: dict[tuple, list] = {}
    for p in points:
        out.setdefault(group_key(p.values, axes), []).append(p)
    return list(out.values())


def check_members(configs: list[ConfigDict]) -> None:
    """Refuse members that cannot share one program (one line naming the key)."""
    axes = set(configs[0].sweep.vmap_axes) | {"sweep.vmap_axes"}
    first = flatten(configs[0])
    for c in configs[1:]:
        for key, value in flatten(c).items():
            if key not in axes and value != first[key]:
                raise ConfigError(f"population members differ in {key} ({first[key]!r} vs {value!r}); only "
                                  f"sweep.vmap_axes ({', '.join(config_keys.VMAP_AXES)}) may differ")
    if configs[0].train.on_nonfinite != "stop":
        raise ConfigError("train.on_nonfinite: a population member stops alone on a non-finite loss; a rollback "
                          "would move it off the group's lockstep. Use 'stop' with sweep.vmap_axes")
    if jax.process_count() > 1:
        raise ConfigError("sweep.vmap_axes: a population trains in one process; run multi-host sweeps without it")


def population_step(objective: steps.Objective, config: ConfigDict, steps_per_epoch: int, total: int) -> Callable:
    """The jitted `(states, batches, keys, lrs, active) -> (states, metrics)`, vmapped over members.

    Member m's learning-rate schedule is `lrs[m]` times the schedule of a unit learning rate
    (every schedule in `optim.schedule` is proportional to it); an inactive member's state is
    left as it is.
    """
    unit_config = config.copy_and_resolve_references()
    unit_config.train.learning_rate = 1.0
    unit = optim.schedule(unit_config, steps_per_epoch, total)

    def member_step(state, batch, key, lr, active):
        def schedule(count):
            return lr * unit(count)

        new, metrics = steps.train_step_fn(objective, optim.optimizer(config, schedule), schedule)(state, batch, key)
        return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state), metrics

    return jax.jit(jax.vmap(member_step), donate_argnums=0)


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _member(tree: Any, m: int) -> Any:
    return jax.tree.map(lambda x: x[m], tree)


def program(members: list[loop.Member]) -> loop.Program:
    """The members' one program for `loop.train_members`: `population_step`, a member axis first."""
    config, task = members[0].config, members[0].task
    spe, batch_size = task.steps_per_epoch, config.train.batch_size
    total = loop.total_steps(config, spe)
    vstep = population_step(task.objective, config, spe, total)
    opt = optim.optimizer(config, optim.schedule(config, spe, total))  # initial states only
    lrs = jnp.asarray([m.config.train.learning_rate for m in members], jnp.float32)

    def batch(epoch: int, index: int) -> Any:
        return jax.tree.map(lambda *xs: np.stack(xs), *[m.task.batch(epoch, index, slice(None)) for m in members])

    return loop.Program(
        step=lambda state, batch, keys, active: vstep(state, batch, keys, lrs, active),
        initial=lambda m: steps.init_state(m.task.model, opt, m.init_key, batch_size),
        key=lambda key: key,
        stack=_stack,
        member=_member,
        local=_member,
        batch=batch,
        fresh_carry=lambda: _stack([m.task.model.initial_carry(batch_size) for m in members]),
        num_devices=1,
        summary={"population": {"size": len(members), "members": [m.name for m in members],
                                "axes": list(config.sweep.vmap_axes)}},
    )


def check_shapes(members: list[loop.Member]) -> None:
    """Refuse members whose data gives them differently shaped parameters or epochs (one line)."""
    first = members[0]
    shapes = [jax.eval_shape(m.task.model.init, m.init_key) for m in members]
    for m, shape in zip(members[1:], shapes[1:]):
        if m.task.steps_per_epoch != first.task.steps_per_epoch or jax.tree.structure(shape) != jax.tree.structure(
                shapes[0]) or any(a.shape != b.shape for a, b in zip(jax.tree.leaves(shape), jax.tree.leaves(shapes[0]))):
            raise DataError(f"population members {first.name} and {m.name} differ in their data's size or vocabulary "
                            f"(the seed decides {first.config.task}'s split); run them without sweep.vmap_axes")


def member_log(name: str, log: Callable[[str], None]) -> Callable[[str], None]:
    """A log whose every line starts `[name] ` (the launcher routes those to the member's train.log)."""
    return lambda message: log("\n".join(f"[{name}] {line}" for line in str(message).splitlines()))


def train(runs: list[Run], make_task: Callable[[Run, Callable[[str], None]], loop.Task],
          log: Callable[[str], None] = print) -> dict[str, dict]:
    """Train the claimed `runs` as one population; write each one's summary; return them by name
    (a member stopped on a non-finite loss has none).

    `make_task(run, log)` builds a member's task (`rnnjax.tasks.TASKS`). Raises
    `loop.Preempted` after SIGTERM / SIGINT / SIGUSR2 (every active member checkpointed first).
    """
    check_members([r.config for r in runs])
    members: list[loop.Member] = []
    try:  # every member's checkpoint manager is closed on every way out
        for r in runs:
            mlog = member_log(r.path.name, log)
            members.append(loop.Member(r, make_task(r, mlog), r.config, mlog))
        check_shapes(members)
        return loop.train_members(members, program(members), log)
    finally:
        for m in members:
            m.close()
