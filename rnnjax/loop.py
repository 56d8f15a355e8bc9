"""The one host loop that trains every run: restore or initialise, step, log, evaluate, checkpoint.

    state = restore()                            # every member from its newest checkpoint, or fresh
    for step in range(start, total_steps):      # as a while loop, so a rollback can move it back
        state, metrics = program.step(state, batch(step), keys)
        log / evaluate / checkpoint each member when due (see `Due`); finish a member when done

A task (`Task`: the language model, sine, echo, sentiment; see `rnnjax.tasks`) supplies its
model, objective, batches and evaluation; everything else is here. The loop trains a list of
`Member`s (a run directory and its task) in lockstep through a `Program`: one run (`single`,
data-parallel over the mesh; `train`) or a population of sweep points vmapped into one program
(`rnnjax.population`). Each member gets the files, checkpoints and summary its run would get
alone. Metrics are read one step late, so the host never waits for the device except when an
action is due. Periodic actions: a train record every `train.log_every` steps; validation every
`eval.every_epochs` epochs and `eval.every_steps` steps; a checkpoint at every validation and
epoch end, every `checkpoint.every_steps` steps, when `checkpoint.every_secs` have passed, and on
SIGTERM / SIGINT (then the loop stops). With `train.patience` a member also stops once that many
evaluations in a row have not improved on the best one before them (early stopping; `stalled`).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import checkpoint, optim, parallel, steps
from rnnjax.config import ConfigDict, resume_changes
from rnnjax.errors import ConfigError, DataError, NonFiniteLoss
from rnnjax.model import num_params
from rnnjax.progress import Progress
from rnnjax.records import headline, make_summary, perplexity
from rnnjax.rundir import SUMMARY, Run


class Preempted(Exception):
    """Training stopped on SIGTERM / SIGINT after writing a checkpoint; the message says how to resume."""


class StopSignals:
    """While entered, SIGTERM, SIGINT and SIGUSR2 only set `received`; the loop checkpoints and stops.

    SIGUSR2 is the warning SLURM sends ahead of a time limit or preemption (`--signal=USR2@90`,
    submitit's default), which reaches every process of the job step, this one included.

    The first signal restores the previous handlers, so a second one acts as usual
    (Ctrl-C twice interrupts at once). Outside the main thread nothing is installed.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def __exit__(self, *exc) -> None:
        self._restore()


class Task(NamedTuple):
    """What a task gives the loop; jit, checkpoints, resume, signals, logging and data parallelism are the loop's."""

    name: str  # the `task` config value, e.g. "lm"
    model: Any  # `init(key) -> params` and `initial_carry(batch_size) -> carry` (() when nothing is carried)
    objective: steps.Objective  # (params, carry, batch, key) -> (value to minimise, (carry, loss))
    steps_per_epoch: int
    batch: Callable[[int, int, slice], Any]  # (epoch, index, rows) -> those rows of the step's batch (host arrays)
    fresh_carry: Callable[[int], bool]  # index in the epoch -> start the carry afresh before that step
    evaluate: Callable[[Any, int, float], "Evaluation"]  # (params, step, mean train loss this epoch)
    finish: Callable[[Any, Callable[[], tuple[Any, int]], "Tally"], tuple[dict, dict]]
    # finish(final params, best_params, tally) -> (records by split, the summary's task metrics), where
    # best_params() -> (params, step) of the kept-best checkpoint
    best: tuple[str, str]  # (metric, "min" | "max"): which evaluation value picks the kept-best checkpoint
    headline: tuple[str, str]  # (summary metric, "min" | "max"): the run's result, e.g. ("test_ppl", "min")
    identity: dict  # saved in every checkpoint; a resume must find it equal (e.g. the vocabulary)
    tokens_per_step: int | None  # for tokens/s; None for tasks of whole examples
    describe: str  # the line logged before training


class Evaluation(NamedTuple):
    records: dict  # split -> its metrics, one metrics.jsonl record each, e.g. {"valid": {"loss": 4.8, ...}}
    value: float | None  # the task's `best` metric, or None when it has none
    message: str  # the log line


class Tally(NamedTuple):
    """The host-side loop state a checkpoint carries besides the arrays (its `meta`)."""

    history: list  # the best-selection values of every evaluation so far
    last: dict | None  # the latest evaluation's records by split
    epoch_loss: float  # sum of this epoch's train losses so far, and their count
    epoch_n: int
    records: int  # metrics.jsonl records written before this point
    wall_s: float  # training wall-clock seconds up to this point, summed over the run's starts


FRESH = Tally([], None, 0.0, 0, 0, 0.0)


def restored_tally(meta: dict) -> Tally:
    """The tally a checkpoint's `meta` holds (a field it predates takes its fresh value)."""
    return Tally(**{k: meta.get(k, getattr(FRESH, k)) for k in Tally._fields})


def total_steps(config: ConfigDict, steps_per_epoch: int) -> int:
    """`train.num_epochs` epochs, capped by `train.max_steps` when that is set."""
    t = config.train
    return min(steps_per_epoch * t.num_epochs, t.max_steps) if t.max_steps > 0 else steps_per_epoch * t.num_epochs


def stalled(history: list, patience: int, mode: str) -> bool:
    """Whether the last `patience` evaluations were all no better than the best before them.

    `history` holds the values of the task's `best` metric, oldest first; `mode` is "min" or
    "max". A non-finite value never counts as better. Always False when `patience` is 0.
    """
    if patience <= 0 or len(history) <= patience:
        return False
    pick, sign = (min, 1.0) if mode == "min" else (max, -1.0)
    best = pick(history[:-patience])
    return not any(sign * v < sign * best for v in history[-patience:])


class Due(NamedTuple):
    """Which periodic actions are due after a step; a step with none of them never waits for the device."""

    force_log: bool  # a train record even off the log_every grid (epoch ends, evaluations, the last step)
    eval: bool  # a validation pass (and a sample, with eval.sample_length)
    save: bool  # a checkpoint; every other action comes with one, so the host syncs only then
    stop: bool  # a signal asked to stop: checkpoint, then leave


def due(step: int, total_steps: int, steps_per_epoch: int, config: ConfigDict, ckpts: checkpoint.Checkpoints,
        stop: str | None) -> Due:
    """The actions due once `step` steps are done (big_vision's `itstime`, one predicate per action)."""

    def every(n: int) -> bool:
        return n > 0 and step % n == 0

    end_of_epoch = every(steps_per_epoch)
    last = step == total_steps
    evaluate = last or every(config.eval.every_steps) or (
        end_of_epoch and (step // steps_per_epoch) % config.eval.every_epochs == 0)
    boundary = end_of_epoch or last or every(config.eval.every_steps)
    save = boundary or evaluate or stop is not None or every(config.checkpoint.every_steps) or ckpts.due(step)
    return Due(boundary, evaluate, save, stop is not None and not last)


def abstract(tree: Any) -> Any:
    """Shapes, dtypes and placements of `tree`: the target a checkpoint restores into."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def position(step: int, steps_per_epoch: int) -> str:
    """"step 468 (epoch 2, batch 78 of 390 done)": how the stop and resume messages name a point in training."""
    epoch, index = divmod(step, steps_per_epoch)
    if index == 0 and step:
        return f"step {step:,} (end of epoch {epoch})"
    return f"step {step:,} (epoch {epoch + 1}, batch {index} of {steps_per_epoch:,} done)"


def resume_check(task: Task, config: ConfigDict, total: int, workdir) -> Callable[[dict], None]:
    """`check(meta)`: refuse a checkpoint this run cannot continue (the run directory checked
    config.json; this checks the checkpoint's own copy); runs before any array is read."""

    def check(meta: dict) -> None:
        unsafe, _ = resume_changes(ConfigDict(meta["config"]), config)
        if unsafe:
            raise ConfigError(f"cannot resume from the checkpoint at step {meta['step']}: config differs in "
                              f"{', '.join(unsafe)}; use a new --workdir to train with a different config")
        for key, value in task.identity.items():
            if meta.get(key) != value:
                raise DataError(f"{workdir}: the checkpoint's {key} differs from this run's; was the data changed?")
        if meta["step"] > total:
            raise ConfigError(f"the checkpoint at step {meta['step']:,} is past this run's end ({total:,} "
                              f"steps); raise train.num_epochs or train.max_steps")

    return check


def checkpoint_meta(step: int, task: Task, config: ConfigDict, total: int, num_devices: int, tally: Tally) -> dict:
    """A checkpoint's `meta`: where training stands, the config and the task's identity, the tally."""
    spe = task.steps_per_epoch
    return {"step": step, "epoch": step // spe, "index": step % spe, "steps_per_epoch": spe,
            "total_steps": total, "sampling": config.data.sampling, "seed": config.seed,
            "num_devices": num_devices, "config": config.to_dict(), **task.identity, **tally._asdict()}


def summary_core(step: int, total: int, steps_per_epoch: int, n_params: int, wall_s: float,
                 tokens_per_s: float | None, num_devices: int) -> dict:
    """The fields of summary.json that every task's run has (`tokens_per_s` None: a task of whole examples)."""
    return {"steps": step, "epochs": step / steps_per_epoch, "planned_steps": total, "num_params": n_params,
            "wall_s": wall_s, **({} if tokens_per_s is None else {"tokens_per_s": tokens_per_s}),
            "num_devices": num_devices, "num_processes": jax.process_count()}


def train_record(step: int, steps_per_epoch: int, metrics: dict, tokens_per_s: float | None) -> dict:
    """A metrics.jsonl train record from one step's metrics (on the host); tokens_per_s None: a task
    of whole examples."""
    loss = float(metrics["loss"])
    tokens = {} if tokens_per_s is None else {"perplexity": perplexity(loss), "tokens_per_s": tokens_per_s}
    return {"step": step, "epoch": step / steps_per_epoch, "split": "train", "loss": loss, **tokens,
            "lr": float(metrics["lr"]), "grad_norm": float(metrics["grad_norm"])}


class Member:
    """One run the loop trains: its run directory, task and config, checkpoints, metrics writer, tally, log."""

    def __init__(self, run: Run, task: Task, config: ConfigDict, log: Callable[[str], None]):
        self.run, self.task, self.config, self.log = run, task, config, log
        self.name = run.path.name
        self.ckpts = checkpoint.Checkpoints(run.path, config, log, best=task.best)
        self.tally = FRESH
        self.metrics_log = None
        self.active = True  # False once finished or stopped on a non-finite loss
        self.failure: str | None = None  # why it stopped, when it stopped on a non-finite loss
        self.init_key, self.first_key = jax.random.split(jax.random.key(config.seed))

    def write(self, records: dict, step: int, wall_s: float) -> None:
        """An evaluation's records (`Evaluation.records`, or the task's final ones), one per split,
        stamped with the run's clock."""
        for split, values in records.items():
            self.metrics_log.write({"step": step, "epoch": step / self.task.steps_per_epoch, "split": split,
                                    **values, "wall_s": wall_s})

    def close(self) -> None:
        self.ckpts.close()
        if self.metrics_log is not None:
            self.metrics_log.close()


class Program(NamedTuple):
    """How the loop's arrays hold its members: one run (`single`, on a data-parallel mesh) or a
    population (`rnnjax.population.program`, a leading member axis on every array)."""

    step: Callable  # (state, batch, keys, active) -> (state, metrics); `active`: a bool per member
    initial: Callable[[Member], steps.TrainState]  # a member's fresh state, placed
    key: Callable[[jax.Array], jax.Array]  # a member's step key, placed
    stack: Callable[[list], Any]  # the members' trees -> the program's
    member: Callable[[Any, int], Any]  # member i's part of a program tree, as placed (what it checkpoints)
    local: Callable[[Any, int], Any]  # member i's part on this host's first device (what it evaluates)
    batch: Callable[[int, int], Any]  # (epoch, index) -> the step's batch, placed
    fresh_carry: Callable[[], Any]  # the program's carry at a sequence start
    num_devices: int
    summary: dict  # fields every member's summary.json adds


def single(task: Task, config: ConfigDict) -> Program:
    """One run's program: the jitted `steps.make_step`, data-parallel over `parallel.num_devices`."""
    spe, batch_size = task.steps_per_epoch, config.train.batch_size
    total = total_steps(config, spe)
    lr_schedule = optim.schedule(config, spe, total)
    opt = optim.optimizer(config, lr_schedule)
    train_step = steps.make_step(task.objective, opt, lr_schedule)
    layout = parallel.make_layout(config)
    return Program(
        step=lambda state, batch, key, active: train_step(state, batch, key),
        initial=lambda m: parallel.place_state(layout, steps.init_state(m.task.model, opt, m.init_key, batch_size)),
        key=lambda key: parallel.replicate(layout, key),  # so a restored key lands on the mesh too
        stack=lambda trees: trees[0],
        member=lambda tree, i: tree,
        local=lambda tree, i: parallel.local_copy(tree),
        batch=lambda epoch, index: parallel.place_batch(layout, lambda rows: task.batch(epoch, index, rows)),
        fresh_carry=parallel.carry_maker(layout, task.model.initial_carry),
        num_devices=layout.mesh.size,
        summary={},
    )


def train(task: Task, config: ConfigDict, run: Run, log: Callable[[str], None] = print) -> dict:
    """Train `task` in the claimed `run`, resuming from its newest good checkpoint if any; write
    and return its summary.

    A resumed run ends bit-identical to an uninterrupted one (same machine and device count).
    Raises `Preempted` after SIGTERM / SIGINT (a checkpoint is written first) and `NonFiniteLoss`
    on a non-finite loss when `train.on_nonfinite` is "stop".
    """
    log = log if parallel.is_main_process() else (lambda _: None)  # only process 0 writes files and logs
    program = single(task, config)
    member = Member(run, task, config, log)
    try:
        return train_members([member], program, log)[member.name]
    finally:
        member.close()


def restore(members: list[Member], program: Program, template: tuple, total: int,
            first_fresh: steps.TrainState | None = None) -> tuple[steps.TrainState, jax.Array, int, list[dict | None]]:
    """(state, keys, step, each member's checkpoint meta or None): every member from the newest step
    all of them hold, or fresh; sets each member's tally. A DataError when they resume from
    different steps (a newer checkpoint of one of them failed to read). `first_fresh`: the first
    member's fresh state when the caller has built it already (not built again)."""
    for m in members:
        m.ckpts.wait()
    newest = [max(m.ckpts.steps(), default=None) for m in members]
    common = None if None in newest else min(newest)  # a member without checkpoints: all start afresh
    states, keys, at, metas = [], [], [], []
    for m in members:
        restored = None if common is None else m.ckpts.restore_latest(
            *template, check=resume_check(m.task, m.config, total, m.run.path), up_to=common)
        if restored is None:
            states.append(first_fresh if first_fresh is not None and m is members[0] else program.initial(m))
            keys.append(program.key(m.first_key))
            m.tally, meta, step = FRESH, None, 0
        else:
            tr = restored.train
            states.append(steps.TrainState(restored.params, tr["opt_state"], tr["step"], tr["carry"]))
            keys.append(jax.random.wrap_key_data(tr["rng"]))
            m.tally, meta, step = restored_tally(restored.meta), restored.meta, restored.step
        at.append(step)
        metas.append(meta)
    if len(set(at)) > 1:
        where = ", ".join(f"{m.name}: step {s}" for m, s in zip(members, at))
        raise DataError(f"population members resume from different steps ({where}); continue them one by one "
                        f"with rnnjax train --workdir DIR, or move their checkpoints away to start over")
    return program.stack(states), program.stack(keys), at[0], metas


def train_members(members: list[Member], program: Program, log: Callable[[str], None]) -> dict[str, dict]:
    """Train `members` in lockstep through `program`; write each one's summary.json as it finishes;
    return the summaries by member name (a member stopped on a non-finite loss has none).

    Raises `NonFiniteLoss` when every member stopped on one, `Preempted` after a stop signal.
    """
    # ---- Plan: sizes, the state template.
    first, k = members[0], len(members)
    config, task0 = first.config, first.task
    t, spe = config.train, task0.steps_per_epoch
    total = total_steps(config, spe)
    fresh = program.initial(first)
    template = (abstract(fresh.params), abstract(checkpoint.train_items(fresh, program.key(first.first_key))))
    n_params = num_params(fresh.params)

    # ---- Restore the newest checkpoint every member holds, or initialise.
    state, keys, start, metas = restore(members, program, template, total, first_fresh=fresh)
    del fresh  # donated to the first step when it was used
    for m, meta in zip(members, metas):
        m.metrics_log = m.run.metrics(keep=m.tally.records)
        if meta is None:
            continue
        if meta["num_devices"] != program.num_devices:
            m.log(f"warning: the checkpoint was written on {meta['num_devices']} device(s), this run uses "
                  f"{program.num_devices}: results match an uninterrupted run to float rounding, not bit for bit")
        if t.schedule in ("cosine", "warmup_cosine") and meta["total_steps"] != total:
            m.log(f"warning: the {t.schedule} schedule now spans {total:,} steps instead of {meta['total_steps']:,}")
    group = "" if k == 1 else f"population of {k} ({', '.join(m.name for m in members)}): "
    if start:
        log(f"{group}resuming from the checkpoint{'s' if k > 1 else ''} at {position(start, spe)}"
            f"{f' in {first.ckpts.root}' if k == 1 else ''}")
    log(f"{group}{task0.describe}, {n_params:,} params{' each' if k > 1 else ''}; {spe:,} steps/epoch, "
        f"{total:,} steps")
    tokens = task0.tokens_per_step is not None
    progress = Progress(total, tokens_per_step=k * (task0.tokens_per_step or 0), log=log)
    # the run's clock: records' and the summary's `wall_s` count the training time before this start too, so a
    # resumed run's times read as an uninterrupted run's (work lost to a kill and redone is counted once)
    this_start = time.time()
    t0 = this_start - max(m.tally.wall_s for m in members)
    summaries: dict[str, dict] = {}

    # ---- The periodic actions, per member.
    def record(step: int, metrics: dict, force: bool) -> int | None:
        """Read step `step`'s metrics on the host: tallies, progress, train records. A non-finite
        member stops, or rolls back (returned: the step to go on from)."""
        host = jax.device_get(metrics)
        progress.update(step)
        write = step % t.log_every == 0 or force
        for i, m in enumerate(members):
            if not m.active:
                continue
            mm = program.member(host, i)
            if not mm["finite"]:
                back = nonfinite(i, step)
                if back is not None:
                    return back
                continue
            m.tally = m.tally._replace(epoch_loss=m.tally.epoch_loss + float(mm["loss"]), epoch_n=m.tally.epoch_n + 1)
            if write:
                m.metrics_log.write(train_record(step, spe, mm, progress.tokens_per_s() / k if tokens else None))
        live = [program.member(host, i) for i, m in enumerate(members) if m.active] if write else []
        if live:  # the progress line: the mean over live members
            mean = jax.tree.map(lambda *xs: sum(map(float, xs)) / len(xs), *live)
            progress.report(train_record(step, spe, mean, progress.tokens_per_s() if tokens else None))
        return None

    def nonfinite(i: int, step: int) -> int | None:
        """Stop member i; or, with train.on_nonfinite=rollback (a single run), roll back to the newest
        checkpoint with the learning rate halved and return the step to go on from."""
        nonlocal state, keys
        m = members[i]
        scale = float(optim.lr_scale(program.member(state.opt_state, i))) / 2
        if t.on_nonfinite == "stop" or scale < 5e-4:
            m.active = False
            m.ckpts.wait()
            last = m.ckpts.steps()
            m.failure = (f"non-finite loss or gradient at {position(step, spe)}; stopped, the last good checkpoint "
                         f"is step {last[-1] if last else 'none'}")
            if k == 1:
                m.failure += " (train.on_nonfinite=rollback restores it with the learning rate halved)"
            else:
                m.log(f"rnnjax: error: {m.failure}; the other members go on")
            return None
        m.metrics_log.close()
        state, keys, back, _ = restore(members, program, template, total)
        state = state._replace(opt_state=optim.with_lr_scale(state.opt_state, scale))
        m.metrics_log = m.run.metrics(keep=m.tally.records)
        m.metrics_log.write({"step": back, "epoch": back / spe, "event": "rollback", "nonfinite_step": step,
                             "lr_scale": scale})
        m.log(f"non-finite loss at step {step:,}: rolled back to step {back:,}, learning rate x{scale:g}")
        return back

    def evaluate(i: int, step: int) -> float | None:
        m = members[i]
        started = time.time()
        e = m.task.evaluate(program.local(state.params, i), step, m.tally.epoch_loss / max(m.tally.epoch_n, 1))
        progress.exclude(time.time() - started)  # tokens/s and the ETA count training time only
        m.write(e.records, step, time.time() - t0)
        m.tally = m.tally._replace(history=m.tally.history + ([e.value] if e.value is not None else []),
                                   last=e.records)
        m.log(e.message)
        return e.value

    def save(i: int, step: int, value: float | None) -> None:
        m = members[i]
        meta = checkpoint_meta(step, m.task, m.config, total, program.num_devices,
                               m.tally._replace(records=m.metrics_log.records, wall_s=time.time() - t0))
        s = program.member(state, i)
        m.ckpts.save(step, s.params, checkpoint.train_items(s, program.member(keys, i)), meta, value)

    def finish(i: int, step: int) -> None:
        """Member i's final evaluation (its task's `finish`) and summary.json."""
        m = members[i]
        m.active = False
        train_wall = time.time() - this_start

        def best_params() -> tuple[Any, int]:
            """The kept-best checkpoint's parameters (on this host) and its step."""
            m.ckpts.wait()
            best = m.ckpts.select("best")
            return parallel.local_copy(m.ckpts.restore_params(best, template[0])[0]), best

        records, metrics = m.task.finish(program.local(state.params, i), best_params, m.tally)
        m.write(records, step, time.time() - t0)
        m.metrics_log.close()
        m.ckpts.wait()  # summary.json marks the run done: only after its last checkpoint is whole
        tokens_per_s = (step - start) * m.task.tokens_per_step / max(train_wall, 1e-9) if tokens else None
        core = {**summary_core(step, total, spe, n_params, time.time() - t0, tokens_per_s, program.num_devices),
                **program.summary}
        summary = make_summary(m.task.name, *m.task.headline, core, metrics)
        m.run.write_summary(summary)
        summaries[m.name] = summary
        metric, value = headline(summary)
        m.log(f"{metric} {value:.6g} ({step:,} steps, {summary['wall_s']:.0f} s); wrote {m.run.file(SUMMARY)}")

    def early_stop(i: int, step: int) -> bool:
        m = members[i]
        if not stalled(m.tally.history, t.patience, m.task.best[1]):
            return False
        m.log(f"early stop at {position(step, spe)}: {m.task.best[0]} has not improved for {t.patience} "
              f"evaluations (train.patience)")
        return True

    # ---- The loop: members in lockstep, metrics read one step late (keeps dispatch async).
    for i in range(k):  # stopped early before a preemption: finish now
        if early_stop(i, start):
            finish(i, start)
    step, pending, live, active = start, None, None, None
    with StopSignals() as stop:
        while step < total and any(m.active for m in members):
            epoch, index = divmod(step, spe)
            if task0.fresh_carry(index):
                state = state._replace(carry=program.fresh_carry())
            if tuple(m.active for m in members) != live:  # changes when a member stops or finishes
                live = tuple(m.active for m in members)
                active = jnp.asarray(live)
            state, metrics = program.step(state, program.batch(epoch, index), keys, active)
            previous, pending, step = pending, (step + 1, metrics), step + 1
            if previous is not None and (back := record(*previous, force=False)) is not None:
                step, pending = back, None
                continue
            now = due(step, total, spe, config, first.ckpts, stop.received)
            if not now.save:
                continue
            pending = None
            if (back := record(step, metrics, force=now.force_log)) is not None:
                step = back
                continue
            for i, m in enumerate(members):
                if not m.active:
                    continue
                value = evaluate(i, step) if now.eval else None
                if step % spe == 0:
                    m.tally = m.tally._replace(epoch_loss=0.0, epoch_n=0)
                save(i, step, value)
                if not now.stop and early_stop(i, step):
                    finish(i, step)
            if now.stop:
                for m in members:
                    m.ckpts.wait()
                where = (f"checkpoint written to {first.ckpts.root}. Resume with: rnnjax train --workdir "
                         f"{first.run.path}" if k == 1 else
                         "checkpoints written for every member. Resume with the same rnnjax sweep command")
                raise Preempted(f"stopped by {stop.received} at {position(step, spe)}; {where}")

    # ---- Each member's final evaluation and summary.
    for i, m in enumerate(members):
        if m.active:
            finish(i, step)
    failed = [m for m in members if m.failure]
    if failed and not summaries:
        raise NonFiniteLoss(failed[0].failure if k == 1 else
                            f"every member of the population stopped on a non-finite loss: {failed[0].failure}")
    return summaries
