"""The host loop that trains the language model: restore or initialise, step, log, evaluate, checkpoint.

    state = restore_or_init()
    for step in range(start, total_steps):      # as a while loop, so a rollback can move it back
        state, metrics = train_step(state, batch(step), key)
        log / evaluate / checkpoint when each is due (see `Due`)

Metrics are read one step late, so the host never waits for the device except when an
action is due. Periodic actions: a train record every `train.log_every` steps; validation
every `eval.every_epochs` epochs and `eval.every_steps` steps; a checkpoint at every
validation and epoch end, every `checkpoint.every_steps` steps, when
`checkpoint.every_secs` have passed, and on SIGTERM / SIGINT (then the loop stops).
"""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax

from rnnjax import batching, checkpoint, optim, parallel, sampling, steps
from rnnjax.config import ConfigDict, resume_changes
from rnnjax.data import Corpus
from rnnjax.errors import ConfigError, DataError, NonFiniteLoss
from rnnjax.model import check_fits, make_lm, num_params
from rnnjax.progress import Progress
from rnnjax.rundir import Run, make_summary, perplexity


class Preempted(Exception):
    """Training stopped on SIGTERM / SIGINT after writing a checkpoint; the message says how to resume."""


class StopSignals:
    """While entered, SIGTERM and SIGINT only set `received`; the loop checkpoints and stops.

    The first signal restores the previous handlers, so a second one acts as usual
    (Ctrl-C twice interrupts at once). Outside the main thread nothing is installed.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

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


class Tally(NamedTuple):
    """The host-side loop state a checkpoint carries besides the arrays (its `meta`)."""

    history: list  # validation perplexities so far (summary's best_valid_ppl)
    valid_nll: float | None  # the latest validation loss
    epoch_nll: float  # sum of this epoch's train losses so far, and their count
    epoch_n: int
    records: int  # metrics.jsonl records written before this point


FRESH = Tally([], None, 0.0, 0, 0)


class Due(NamedTuple):
    """Which periodic actions are due after a step; a step with none of them never waits for the device."""

    log: bool  # a train record in metrics.jsonl
    force_log: bool  # a train record even off the log_every grid (epoch ends, evaluations, the last step)
    eval: bool  # a validation pass (and a sample, with eval.sample_length)
    save: bool  # a checkpoint
    stop: bool  # a signal asked to stop: checkpoint, then leave

    @property
    def any(self) -> bool:
        return self.save  # every other action comes with a checkpoint, so the host syncs only then


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
    return Due(every(config.train.log_every), boundary, evaluate, save, stop is not None and not last)


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def position(step: int, steps_per_epoch: int) -> str:
    """"step 468 (epoch 2, batch 78 of 390 done)": how the stop and resume messages name a point in training."""
    epoch, index = divmod(step, steps_per_epoch)
    if index == 0 and step:
        return f"step {step:,} (end of epoch {epoch})"
    return f"step {step:,} (epoch {epoch + 1}, batch {index} of {steps_per_epoch:,} done)"


def train(config: ConfigDict, corpus: Corpus, run: Run, log: Callable[[str], None] = print) -> dict:
    """Train `config` on `corpus` in the claimed `run`, resuming from its newest good checkpoint if any.

    Writes vocab.json, metrics.jsonl, checkpoints/ and summary.json (config.json is the
    run directory's). A resumed run ends bit-identical to an uninterrupted one (same
    machine and device count). Raises `Preempted` after SIGTERM / SIGINT (a checkpoint is
    written first) and `NonFiniteLoss` on a non-finite loss when `train.on_nonfinite` is "stop".
    """
    # ---- Plan: sizes, model, optimizer, steps.
    workdir, t = run.path, config.train
    train_ids = corpus.splits["train"]
    spe = batching.steps_per_epoch(len(train_ids), t.batch_size, t.seq_len, config.data.sampling)
    total_steps = min(spe * t.num_epochs, t.max_steps) if t.max_steps > 0 else spe * t.num_epochs
    check_fits(config, corpus.vocab_size, *parallel.memory_limit())
    lm = make_lm(config, corpus.vocab_size)
    lr_schedule = optim.schedule(config, spe, total_steps)
    opt = optim.optimizer(config, lr_schedule)
    train_step = steps.make_train_step(lm, opt, lr_schedule, config)
    eval_step = steps.make_eval_step(lm)
    layout = parallel.make_layout(config)
    new_carry = parallel.carry_maker(layout, lm.initial_carry)
    keep_carry = batching.carries_state(config.data.sampling)
    main = parallel.is_main_process()  # only process 0 writes files and logs
    log = log if main else (lambda _: None)

    # ---- Restore the newest good checkpoint, or initialise.
    init_key, first_key = jax.random.split(jax.random.key(config.seed))
    first_key = parallel.replicate(layout, first_key)  # so a restored key lands on the mesh too

    def initial() -> steps.TrainState:
        return parallel.place_state(layout, steps.init_state(lm, opt, init_key, t.batch_size))

    def check(meta: dict) -> None:
        """Refuse a checkpoint this run cannot continue (the run directory checked config.json; this
        checks the checkpoint's own copy); runs before any array is read."""
        unsafe, _ = resume_changes(ConfigDict(meta["config"]), config)
        if unsafe:
            raise ConfigError(f"cannot resume from the checkpoint at step {meta['step']}: config differs in "
                              f"{', '.join(unsafe)}; use a new --workdir to train with a different config")
        if meta["vocab"] != corpus.vocab:
            raise DataError(f"{workdir}: the corpus vocabulary ({corpus.vocab_size:,} tokens) differs from the "
                            f"checkpoint's ({len(meta['vocab']):,}); was the corpus changed?")
        if meta["step"] > total_steps:
            raise ConfigError(f"the checkpoint at step {meta['step']:,} is past this run's end ({total_steps:,} "
                              f"steps); raise train.num_epochs or train.max_steps")

    ckpts = checkpoint.Checkpoints(workdir, config, log)
    fresh = initial()
    template = (_abstract(fresh.params), _abstract(checkpoint.train_items(fresh, first_key)))
    n_params = num_params(fresh.params)

    def restore_or_init(fresh: steps.TrainState | None = None) -> tuple[steps.TrainState, jax.Array, Tally, dict | None]:
        restored = ckpts.restore_latest(*template, check=check)
        if restored is None:
            return (fresh if fresh is not None else initial()), first_key, FRESH, None
        tr = restored.train
        state = steps.TrainState(restored.params, tr["opt_state"], tr["step"], tr["carry"])
        tally = Tally(**{k: restored.meta[k] for k in Tally._fields})
        return state, jax.random.wrap_key_data(tr["rng"]), tally, restored.meta

    state, step_key, tally, meta = restore_or_init(fresh)
    del fresh  # donated to the first step
    start = int(state.step)
    if meta is not None:
        if meta["num_devices"] != layout.mesh.size:
            log(f"warning: the checkpoint was written on {meta['num_devices']} device(s), this run uses "
                f"{layout.mesh.size}: results match an uninterrupted run to float rounding, not bit for bit")
        if t.schedule in ("cosine", "warmup_cosine") and meta["total_steps"] != total_steps:
            log(f"warning: the {t.schedule} schedule now spans {total_steps:,} steps instead of "
                f"{meta['total_steps']:,}")
        log(f"resuming from the checkpoint at {position(start, spe)} in {ckpts.root}")
    run.write_vocab(corpus.vocab)
    metrics_log = run.metrics(keep=tally.records)
    log(f"{corpus.name}: {len(train_ids):,} train tokens, vocab {corpus.vocab_size:,}; "
        f"{config.model.cell} {lm.sizes}, {n_params:,} params; {spe:,} steps/epoch, {total_steps:,} steps")
    progress = Progress(total_steps, tokens_per_step=t.batch_size * t.seq_len, log=log)
    t0 = time.time()

    # ---- The periodic actions.
    def record(step: int, metrics: dict, force: bool) -> bool:
        """Read step `step`'s metrics on the host: tally, progress, a train record; False if not finite."""
        nonlocal tally
        m = jax.device_get(metrics)
        if not m["finite"]:
            return False
        tally = tally._replace(epoch_nll=tally.epoch_nll + float(m["loss"]), epoch_n=tally.epoch_n + 1)
        progress.update(step)
        if step % t.log_every == 0 or force:
            entry = {"step": step, "epoch": step / spe, "split": "train", "loss": float(m["loss"]),
                     "perplexity": perplexity(float(m["loss"])), "tokens_per_s": progress.tokens_per_s(),
                     "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"])}
            metrics_log.write(entry)
            progress.report(entry)
        return True

    def evaluate(split: str, step: int) -> float:
        nll = steps.evaluate(lm, eval_step, parallel.local_copy(state.params), corpus.splits[split], config)
        metrics_log.write({"step": step, "epoch": step / spe, "split": split, "loss": nll,
                           "perplexity": perplexity(nll), "bpt": nll / math.log(2), "wall_s": time.time() - t0})
        return nll

    def validate(step: int) -> float:
        nonlocal tally
        valid_nll = evaluate("valid", step)
        valid_ppl = perplexity(valid_nll)
        tally = tally._replace(history=tally.history + [valid_ppl], valid_nll=valid_nll)
        log(f"epoch {step / spe:.2f}: train ppl {perplexity(tally.epoch_nll / max(tally.epoch_n, 1)):.2f}, "
            f"valid ppl {valid_ppl:.3f}")
        if config.eval.sample_length > 0:
            log(sampling.progress_sample(lm, parallel.local_copy(state.params), corpus, config, step))
        return valid_ppl

    def save(step: int, valid_ppl: float | None) -> None:
        meta = {"step": step, "epoch": step // spe, "index": step % spe, "steps_per_epoch": spe,
                "total_steps": total_steps, "sampling": config.data.sampling, "seed": config.seed,
                "num_devices": layout.mesh.size, "config": config.to_dict(), "vocab": corpus.vocab,
                **tally._replace(records=metrics_log.records)._asdict()}
        ckpts.save(step, state.params, checkpoint.train_items(state, step_key), meta, valid_ppl)

    def nonfinite(step: int) -> int:
        """Stop, or roll back to the newest checkpoint with the learning rate halved; the step to go on from."""
        nonlocal state, step_key, tally, metrics_log
        scale = float(optim.lr_scale(state.opt_state)) / 2
        if t.on_nonfinite == "stop" or scale < 5e-4:
            ckpts.wait()
            last = ckpts.steps()
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
            while step < total_steps:
                epoch, index = divmod(step, spe)
                if index == 0 or not keep_carry:
                    state = state._replace(carry=new_carry())
                batch = parallel.place_batch(layout, lambda rows: batching.train_batch(
                    train_ids, t.batch_size, t.seq_len, config.data.sampling, config.seed, epoch, index, rows))
                state, metrics = train_step(state, batch, step_key)
                previous, pending, step = pending, (step + 1, metrics), step + 1
                if previous is not None and not record(*previous, force=False):
                    step, pending = nonfinite(previous[0]), None
                    continue
                now = due(step, total_steps, spe, config, ckpts, stop.received)
                if not now.any:
                    continue
                pending = None
                if not record(step, metrics, force=now.force_log):
                    step = nonfinite(step)
                    continue
                valid_ppl = validate(step) if now.eval else None
                if step % spe == 0:
                    tally = tally._replace(epoch_nll=0.0, epoch_n=0)
                save(step, valid_ppl)
                if now.stop:
                    ckpts.wait()
                    raise Preempted(f"stopped by {stop.received} at {position(step, spe)}; checkpoint written "
                                    f"to {ckpts.root}. Resume with: rnnjax train --workdir {workdir}")
    finally:
        ckpts.close()

    # ---- Test, and the summary.
    train_wall = time.time() - t0
    test_nll = evaluate("test", total_steps)
    metrics_log.close()
    valid_nll = float("nan") if tally.valid_nll is None else tally.valid_nll
    core = {"steps": total_steps, "epochs": total_steps / spe, "num_params": n_params, "wall_s": time.time() - t0,
            "tokens_per_s": (total_steps - start) * t.batch_size * t.seq_len / max(train_wall, 1e-9),
            "num_devices": layout.mesh.size, "num_processes": jax.process_count()}
    return make_summary("lm", "test_ppl", "min", core, {
        "valid_ppl": perplexity(valid_nll),
        "test_ppl": perplexity(test_nll),
        "best_valid_ppl": min(tally.history) if tally.history else None,
        "valid_loss": valid_nll,
        "test_loss": test_nll,
        "corpus": corpus.name,
        "level": corpus.level,  # "char": rnnjax report adds bits per character
        "floor_ppl": corpus.floor_ppl,
    })
