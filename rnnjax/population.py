"""A population: sweep points that differ only in `sweep.vmap_axes` (seed, learning rate) trained
as one jitted program, `jax.vmap` over a leading member axis of params, optimizer state, carry
and keys.

    for step in range(start, total):                 # all members in lockstep
        states, metrics = vmap(train_step)(states, stacked batches, keys, learning rates, active)
        for each active member: record / evaluate / checkpoint / finish when due (`loop.due`)

Each member keeps its own run directory with the files a separate run writes (config.json,
metrics.jsonl, checkpoints/, summary.json), and its checkpoints are the ones that run would
write: the group saves them together, at the same steps, and resumes from the newest step every
member holds, bit for bit. A member's learning rate multiplies the schedule of a unit learning
rate, so its updates equal the separate run's to float rounding. A member whose loss turns
non-finite stops alone (`train.on_nonfinite=stop`; a rollback would break the lockstep and is
refused), and one that early-stops (`train.patience`) finishes alone; both are then frozen and
the others go on. Members are evaluated one after another on the host.

The sweep launcher (`rnnjax sweep` with `sweep.vmap_axes`) runs each group as
`rnnjax sweep ... --population NAME --population NAME ...` and routes every `[NAME] ` line of its output to
that member's train.log.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checkpoint, config_keys, loop, optim, steps
from rnnjax.config import ConfigDict, flatten
from rnnjax.errors import ConfigError, DataError
from rnnjax.model import num_params
from rnnjax.progress import Progress
from rnnjax.records import make_summary
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


class Member:
    """One member's host side: its run, task, checkpoints, metrics writer, tally and log."""

    def __init__(self, run: Run, task: loop.Task, log: Callable[[str], None]):
        self.run, self.task, self.config, self.log = run, task, run.config, log
        self.name = run.path.name
        self.ckpts = checkpoint.Checkpoints(run.path, run.config, log, best=task.best)
        self.tally = loop.FRESH
        self.metrics_log = None
        self.active = True
        self.init_key, self.first_key = jax.random.split(jax.random.key(run.config.seed))  # as `loop.train` splits

    def write(self, records: dict, step: int, wall_s: float) -> None:
        for rec in loop.evaluation_records(records, step, self.task.steps_per_epoch, wall_s):
            self.metrics_log.write(rec)


def member_log(name: str, log: Callable[[str], None]) -> Callable[[str], None]:
    """A log whose every line starts `[name] ` (the launcher routes those to the member's train.log)."""
    return lambda message: log("\n".join(f"[{name}] {line}" for line in str(message).splitlines()))


def train(runs: list[Run], make_task: Callable[[Run, Callable[[str], None]], loop.Task],
          log: Callable[[str], None] = print) -> dict[str, dict]:
    """Train the claimed `runs` as one population; write each one's summary; return them by name.

    `make_task(run, log)` builds a member's task (`rnnjax.tasks.TASKS`). Raises
    `loop.Preempted` after SIGTERM / SIGINT / SIGUSR2 (every active member checkpointed first).
    """
    check_members([r.config for r in runs])
    members: list[Member] = []
    try:  # every member's checkpoint manager is closed on every way out
        for r in runs:
            mlog = member_log(r.path.name, log)
            members.append(Member(r, make_task(r, mlog), mlog))
        return _train(members, log)
    finally:
        for m in members:
            m.ckpts.close()
            if m.metrics_log is not None:
                m.metrics_log.close()


def _train(members: list[Member], log: Callable[[str], None]) -> dict[str, dict]:
    # ---- Plan: one program for every member.
    first = members[0]
    config, t, task0 = first.config, first.config.train, first.task
    spe = task0.steps_per_epoch
    total = loop.total_steps(config, spe)
    shapes = [jax.eval_shape(m.task.model.init, m.init_key) for m in members]
    for m, shape in zip(members[1:], shapes[1:]):
        if m.task.steps_per_epoch != spe or jax.tree.structure(shape) != jax.tree.structure(shapes[0]) or any(
                a.shape != b.shape for a, b in zip(jax.tree.leaves(shape), jax.tree.leaves(shapes[0]))):
            raise DataError(f"population members {first.name} and {m.name} differ in their data's size or vocabulary "
                            f"(the seed decides {config.task}'s split); run them without sweep.vmap_axes")
    vstep = population_step(task0.objective, config, spe, total)
    opt = optim.optimizer(config, optim.schedule(config, spe, total))  # initial states only
    lrs = jnp.asarray([m.config.train.learning_rate for m in members], jnp.float32)
    k = len(members)

    def initial(m: Member) -> steps.TrainState:
        return steps.init_state(m.task.model, opt, m.init_key, t.batch_size)

    fresh = initial(first)
    template = (loop.abstract(fresh.params), loop.abstract(checkpoint.train_items(fresh, first.first_key)))
    n_params = num_params(fresh.params)

    # ---- Resume every member from the newest step all of them hold, or initialise.
    common = min(max(m.ckpts.steps(), default=0) for m in members)
    states, keys, at = [], [], []
    for m in members:
        restored = m.ckpts.restore_latest(*template, check=loop.resume_check(m.task, m.config, total, m.run.path),
                                          up_to=common) if common else None
        if restored is None:
            states.append(initial(m))
            keys.append(m.first_key)
            at.append(0)
            continue
        tr = restored.train
        states.append(steps.TrainState(restored.params, tr["opt_state"], tr["step"], tr["carry"]))
        keys.append(jax.random.wrap_key_data(tr["rng"]))
        m.tally = loop.restored_tally(restored.meta)
        at.append(restored.step)
    if len(set(at)) > 1:
        where = ", ".join(f"{m.name}: step {s}" for m, s in zip(members, at))
        raise DataError(f"population members resume from different steps ({where}); continue them one by one "
                        f"with rnnjax train --workdir DIR, or move their checkpoints away to start over")
    start = at[0]
    for m in members:
        m.metrics_log = m.run.metrics(keep=m.tally.records)
    state, keys = _stack(states), jnp.stack(keys)
    del states, fresh
    if start:
        log(f"population of {k}: resuming from the checkpoints at {loop.position(start, spe)}")
    log(f"population of {k} ({', '.join(m.name for m in members)}): {task0.describe}, {n_params:,} params each; "
        f"{spe:,} steps/epoch, {total:,} steps")
    progress = Progress(total, tokens_per_step=k * (task0.tokens_per_step or 0), log=log)
    this_start = time.time()
    t0 = this_start - max(m.tally.wall_s for m in members)  # the group's clock, as `loop.train`'s
    summaries: dict[str, dict] = {}

    # ---- The periodic actions, per member.
    def record(step: int, metrics: dict, force: bool) -> None:
        """Read step `step`'s metrics: each member's tally and train record; stop non-finite members."""
        host = jax.device_get(metrics)
        progress.update(step)
        per_member_tokens = progress.tokens_per_s() / k if task0.tokens_per_step else None
        for i, m in enumerate(members):
            if not m.active:
                continue
            mm = _member(host, i)
            if not mm["finite"]:
                stop_member(i, step)
                continue
            m.tally = m.tally._replace(epoch_loss=m.tally.epoch_loss + float(mm["loss"]), epoch_n=m.tally.epoch_n + 1)
            if step % t.log_every == 0 or force:
                m.metrics_log.write(loop.train_record(step, spe, mm, per_member_tokens))
        if step % t.log_every == 0 or force:
            live = [i for i, m in enumerate(members) if m.active]
            if live:
                entry = loop.train_record(step, spe, jax.tree.map(lambda x: np.mean(x[live]), host),
                                          progress.tokens_per_s() if task0.tokens_per_step else None)
                progress.report(entry)

    def stop_member(i: int, step: int) -> None:
        m = members[i]
        m.active = False
        m.ckpts.wait()
        last = m.ckpts.steps()
        m.log(f"rnnjax: error: non-finite loss or gradient at {loop.position(step, spe)}; this member stopped, the "
              f"others go on; its last good checkpoint is step {last[-1] if last else 'none'}")

    def evaluate(i: int, step: int) -> float | None:
        m = members[i]
        started = time.time()
        e = m.task.evaluate(_member(state.params, i), step, m.tally.epoch_loss / max(m.tally.epoch_n, 1))
        progress.exclude(time.time() - started)
        m.write(e.records, step, time.time() - t0)
        m.tally = m.tally._replace(history=m.tally.history + ([e.value] if e.value is not None else []),
                                   last=e.records)
        m.log(e.message)
        return e.value

    def save(i: int, step: int, value: float | None) -> None:
        m = members[i]
        meta = loop.checkpoint_meta(step, m.task, m.config, total, 1,
                                    m.tally._replace(records=m.metrics_log.records, wall_s=time.time() - t0))
        s = _member(state, i)
        m.ckpts.save(step, s.params, checkpoint.train_items(s, keys[i]), meta, value)

    def finish(i: int, step: int) -> None:
        m = members[i]
        m.active = False

        def best_params() -> tuple[Any, int]:
            m.ckpts.wait()
            best = m.ckpts.select("best")
            return m.ckpts.restore_params(best, template[0])[0], best

        records, metrics = m.task.finish(_member(state.params, i), best_params, m.tally)
        m.write(records, step, time.time() - t0)
        m.metrics_log.close()
        tokens_per_s = ((step - start) * task0.tokens_per_step / max(time.time() - this_start, 1e-9)
                        if task0.tokens_per_step else None)
        core = {**loop.summary_core(step, total, spe, n_params, time.time() - t0, tokens_per_s, 1),
                "population": {"size": k, "members": [x.name for x in members], "axes": list(config.sweep.vmap_axes)}}
        summary = make_summary(m.task.name, *m.task.headline, core, metrics)
        m.run.write_summary(summary)
        summaries[m.name] = summary
        metric, value = m.task.headline[0], summary[m.task.headline[0]]
        m.log(f"{metric} {value:.6g} ({step:,} steps, {summary['wall_s']:.0f} s); wrote {m.run.file('summary.json')}")

    # ---- The loop: lockstep, metrics read one step late as in `loop.train`.
    for i, m in enumerate(members):  # stopped early before a preemption: finish now
        if loop.stalled(m.tally.history, t.patience, m.task.best[1]):
            finish(i, start)
    step, pending, live, active = start, None, (), None
    with loop.StopSignals() as stop:
        while step < total and any(m.active for m in members):
            epoch, index = divmod(step, spe)
            if task0.fresh_carry(index):
                state = state._replace(carry=_stack([m.task.model.initial_carry(t.batch_size) for m in members]))
            batch = jax.tree.map(lambda *xs: np.stack(xs), *[m.task.batch(epoch, index, slice(None)) for m in members])
            if tuple(m.active for m in members) != live:  # changes when a member stops or finishes
                live = tuple(m.active for m in members)
                active = jnp.asarray(live)
            state, metrics = vstep(state, batch, keys, lrs, active)
            previous, pending, step = pending, (step + 1, metrics), step + 1
            if previous is not None:
                record(*previous, force=False)
            now = loop.due(step, total, spe, config, first.ckpts, stop.received)
            if not now.save:
                continue
            pending = None
            record(step, metrics, force=now.force_log)
            for i, m in enumerate(members):
                if not m.active:
                    continue
                value = evaluate(i, step) if now.eval else None
                if step % spe == 0:
                    m.tally = m.tally._replace(epoch_loss=0.0, epoch_n=0)
                save(i, step, value)
                if loop.stalled(m.tally.history, t.patience, m.task.best[1]) and not now.stop:
                    m.log(f"early stop at {loop.position(step, spe)}: {m.task.best[0]} has not improved for "
                          f"{t.patience} evaluations (train.patience)")
                    finish(i, step)
            if now.stop:
                for m in members:
                    m.ckpts.wait()
                raise loop.Preempted(f"stopped by {stop.received} at {loop.position(step, spe)}; checkpoints "
                                     f"written for every member. Resume with the same rnnjax sweep command")
    for i, m in enumerate(members):
        if m.active:
            finish(i, step)
    return summaries

