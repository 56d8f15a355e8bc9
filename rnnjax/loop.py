"""The one host loop that trains every task: restore or initialise, step, log, evaluate, checkpoint.

    state = restore_or_init()
    for step in range(start, total_steps):      # as a while loop, so a rollback can move it back
        state, metrics = train_step(state, batch(step), key)
        log / evaluate / checkpoint when each is due (see `Due`)

A task (`Task`: the language model, sine, echo, sentiment; see `rnnjax.tasks`) supplies its
model, objective, batches and evaluation; everything else is here. Metrics are read one step
late, so the host never waits for the device except when an action is due. Periodic actions: a train record every `train.log_every` steps; validation
every `eval.every_epochs` epochs and `eval.every_steps` steps; a checkpoint at every
validation and epoch end, every `checkpoint.every_steps` steps, when
`checkpoint.every_secs` have passed, and on SIGTERM / SIGINT (then the loop stops). With
`train.patience` the loop also stops once that many evaluations in a row have not improved on
the best one before them (early stopping; `stalled`).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax

from rnnjax import checkpoint, optim, parallel, steps
from rnnjax.config import ConfigDict, resume_changes
from rnnjax.errors import ConfigError, DataError, NonFiniteLoss
from rnnjax.model import num_params
from rnnjax.progress import Progress
from rnnjax.records import make_summary, perplexity
from rnnjax.rundir import Run


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


def evaluation_records(records: dict, step: int, steps_per_epoch: int, wall_s: float) -> list[dict]:
    """The metrics.jsonl records of one evaluation (`Evaluation.records`, or a task's final ones): one
    per split, stamped with the run's clock."""
    return [{"step": step, "epoch": step / steps_per_epoch, "split": split, **values, "wall_s": wall_s}
            for split, values in records.items()]


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


def train(task: Task, config: ConfigDict, run: Run, log: Callable[[str], None] = print) -> dict:
    """Train `task` in the claimed `run`, resuming from its newest good checkpoint if any; return its summary.

    Writes metrics.jsonl and checkpoints/ (the caller writes summary.json). A resumed run
    ends bit-identical to an uninterrupted one (same machine and device count). Raises
    `Preempted` after SIGTERM / SIGINT (a checkpoint is written first) and `NonFiniteLoss`
    on a non-finite loss when `train.on_nonfinite` is "stop".
    """
    # ---- Plan: sizes, optimizer, steps.
    workdir, t, spe = run.path, config.train, task.steps_per_epoch
    total = total_steps(config, spe)
    lr_schedule = optim.schedule(config, spe, total)
    opt = optim.optimizer(config, lr_schedule)
    train_step = steps.make_step(task.objective, opt, lr_schedule)
    layout = parallel.make_layout(config)
    new_carry = parallel.carry_maker(layout, task.model.initial_carry)
    main = parallel.is_main_process()  # only process 0 writes files and logs
    log = log if main else (lambda _: None)

    # ---- Restore the newest good checkpoint, or initialise.
    init_key, first_key = jax.random.split(jax.random.key(config.seed))
    first_key = parallel.replicate(layout, first_key)  # so a restored key lands on the mesh too

    def initial() -> steps.TrainState:
        return parallel.place_state(layout, steps.init_state(task.model, opt, init_key, t.batch_size))

    check = resume_check(task, config, total, workdir)
    fresh = initial()
    template = (abstract(fresh.params), abstract(checkpoint.train_items(fresh, first_key)))
    n_params = num_params(fresh.params)

    def restore_or_init(fresh: steps.TrainState | None = None) -> tuple[steps.TrainState, jax.Array, Tally, dict | None]:
        restored = ckpts.restore_latest(*template, check=check)
        if restored is None:
            return (fresh if fresh is not None else initial()), first_key, FRESH, None
        tr = restored.train
        state = steps.TrainState(restored.params, tr["opt_state"], tr["step"], tr["carry"])
        tally = restored_tally(restored.meta)
        return state, jax.random.wrap_key_data(tr["rng"]), tally, restored.meta

    ckpts = checkpoint.Checkpoints(workdir, config, log, best=task.best)
    try:  # from here on the manager's threads are closed on every way out (the loop's `finally` below)
        state, step_key, tally, meta = restore_or_init(fresh)
        metrics_log = run.metrics(keep=tally.records)
    except BaseException:
        ckpts.close()
        raise
    del fresh  # donated to the first step
    start = int(state.step)
    if meta is not None:
        if meta["num_devices"] != layout.mesh.size:
            log(f"warning: the checkpoint was written on {meta['num_devices']} device(s), this run uses "
                f"{layout.mesh.size}: results match an uninterrupted run to float rounding, not bit for bit")
        if t.schedule in ("cosine", "warmup_cosine") and meta["total_steps"] != total:
            log(f"warning: the {t.schedule} schedule now spans {total:,} steps instead of {meta['total_steps']:,}")
        log(f"resuming from the checkpoint at {position(start, spe)} in {ckpts.root}")
    log(f"{task.describe}, {n_params:,} params; {spe:,} steps/epoch, {total:,} steps")
    progress = Progress(total, tokens_per_step=task.tokens_per_step or 0, log=log)
    # the run's clock: records' and the summary's `wall_s` count the training time before this start too, so a
    # resumed run's times read as an uninterrupted run's (work lost to a kill and redone is counted once)
    this_start = time.time()
    t0 = this_start - tally.wall_s

    # ---- The periodic actions.
    def record(step: int, metrics: dict, force: bool) -> bool:
        """Read step `step`'s metrics on the host: tally, progress, a train record; False if not finite."""
        nonlocal tally
        m = jax.device_get(metrics)
        if not m["finite"]:
            return False
        tally = tally._replace(epoch_loss=tally.epoch_loss + float(m["loss"]), epoch_n=tally.epoch_n + 1)
        progress.update(step)
        if step % t.log_every == 0 or force:
            entry = train_record(step, spe, m, progress.tokens_per_s() if task.tokens_per_step else None)
            metrics_log.write(entry)
            progress.report(entry)
        return True

    def write(records: dict, step: int) -> None:
        for rec in evaluation_records(records, step, spe, time.time() - t0):
            metrics_log.write(rec)

    def evaluate(step: int) -> float | None:
        nonlocal tally
        started = time.time()
        e = task.evaluate(parallel.local_copy(state.params), step, tally.epoch_loss / max(tally.epoch_n, 1))
        progress.exclude(time.time() - started)  # tokens/s and the ETA count training time only
        write(e.records, step)
        tally = tally._replace(history=tally.history + ([e.value] if e.value is not None else []), last=e.records)
        log(e.message)
        return e.value

    def save(step: int, value: float | None) -> None:
        meta = checkpoint_meta(step, task, config, total, layout.mesh.size,
                               tally._replace(records=metrics_log.records, wall_s=time.time() - t0))
        ckpts.save(step, state.params, checkpoint.train_items(state, step_key), meta, value)

    def nonfinite(step: int) -> int:
        """Stop, or roll back to the newest checkpoint with the learning rate halved; the step to go on from."""
        nonlocal state, step_key, tally, metrics_log
        scale = float(optim.lr_scale(state.opt_state)) / 2
        if t.on_nonfinite == "stop" or scale < 5e-4:
            ckpts.wait()
            last = ckpts.steps()
            metrics_log.close()
            raise NonFiniteLoss(f"non-finite loss or gradient at {position(step, spe)}; stopped, the last good "
                                f"checkpoint is step {last[-1] if last else 'none'} (train.on_nonfinite=rollback "
                                f"restores it with the learning rate halved)")
        metrics_log.close()
        state, step_key, tally, _ = restore_or_init()
        state = state._replace(opt_state=optim.with_lr_scale(state.opt_state, scale))
        metrics_log = run.metrics(keep=tally.records)
        back = int(state.step)
        metrics_log.write({"step": back, "epoch": back / spe, "event": "rollback", "nonfinite_step": step,
                           "lr_scale": scale})
        log(f"non-finite loss at step {step:,}: rolled back to step {back:,}, learning rate x{scale:g}")
        return back

    # ---- The loop.
    step, pending = start, None  # pending: the step in flight, read one step later (keeps dispatch async)
    try:
        with StopSignals() as stop:
            while step < total and not stalled(tally.history, t.patience, task.best[1]):
                epoch, index = divmod(step, spe)
                if task.fresh_carry(index):
                    state = state._replace(carry=new_carry())
                batch = parallel.place_batch(layout, lambda rows: task.batch(epoch, index, rows))
                state, metrics = train_step(state, batch, step_key)
                previous, pending, step = pending, (step + 1, metrics), step + 1
                if previous is not None and not record(*previous, force=False):
                    step, pending = nonfinite(previous[0]), None
                    continue
                now = due(step, total, spe, config, ckpts, stop.received)
                if not now.save:
                    continue
                pending = None
                if not record(step, metrics, force=now.force_log):
                    step = nonfinite(step)
                    continue
                value = evaluate(step) if now.eval else None
                if step % spe == 0:
                    tally = tally._replace(epoch_loss=0.0, epoch_n=0)
                save(step, value)
                if now.stop:
                    ckpts.wait()
                    raise Preempted(f"stopped by {stop.received} at {position(step, spe)}; checkpoint written "
                                    f"to {ckpts.root}. Resume with: rnnjax train --workdir {workdir}")
        train_wall = time.time() - this_start
        if step < total:
            log(f"early stop at {position(step, spe)}: {task.best[0]} has not improved for {t.patience} "
                f"evaluations (train.patience)")

        # ---- The task's final evaluation, and the summary.
        def best_params() -> tuple[Any, int]:
            """The kept-best checkpoint's parameters (on this host) and its step."""
            ckpts.wait()
            step = ckpts.select("best")
            return parallel.local_copy(ckpts.restore_params(step, template[0])[0]), step

        records, metrics = task.finish(parallel.local_copy(state.params), best_params, tally)
    finally:
        ckpts.close()
    write(records, step)
    metrics_log.close()
    tokens_per_s = (step - start) * task.tokens_per_step / max(train_wall, 1e-9) if task.tokens_per_step else None
    core = summary_core(step, total, spe, n_params, time.time() - t0, tokens_per_s, layout.mesh.size)
    return make_summary(task.name, *task.headline, core, metrics)
