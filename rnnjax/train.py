"""Training and evaluation of the language model: a pure jitted `train_step` and the loop.

    state, metrics = train_step(state, batch, key)

`state` holds everything the next step depends on (params, optimizer state, step, the
RNN carry for truncated BPTT); the step's dropout key is `fold_in(key, state.step)`.
The step is jitted once with the state's buffers donated.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import batching, checkpoint, optim, parallel, sampling
from rnnjax.config import ConfigDict, resume_changes
from rnnjax.data import Corpus
from rnnjax.errors import ConfigError, DataError, NonFiniteLoss
from rnnjax.model import LanguageModel, check_fits, make_lm, num_params
from rnnjax.progress import Progress
from rnnjax.rundir import MetricsWriter, Run, make_summary, perplexity

Array = jax.Array


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array  # int32 scalar
    carry: Any  # RNN state carried to the next batch (truncated BPTT)


def init_state(lm: LanguageModel, opt: optax.GradientTransformation, key: Array, batch_size: int) -> TrainState:
    params = lm.init(key)
    return TrainState(params, opt.init(params), jnp.zeros((), jnp.int32), lm.initial_carry(batch_size))


def make_train_step(lm: LanguageModel, opt: optax.GradientTransformation, lr_schedule: optax.Schedule,
                    config: ConfigDict) -> Callable:
    """The jitted `train_step(state, batch, key) -> (state, metrics)`.

    The objective is the mean per-token cross entropy, times `seq_len` when
    `train.time_sum_loss` (Zaremba's batch-mean loss summed over the unrolled steps).
    A step whose loss or gradient is not finite leaves the state unchanged and reports
    `finite = False`, so the last good state survives.
    """
    scale = float(config.train.seq_len) if config.train.time_sum_loss else 1.0

    def loss_fn(params, carry, inputs, targets, key):
        carry, nll = lm.nll(params, carry, inputs, targets, key=key)
        loss = nll.mean()
        return loss * scale, (carry, loss)

    def train_step(state: TrainState, batch: batching.Batch, key: Array) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(key, state.step)
        carry = jax.lax.stop_gradient(state.carry)
        (_, (carry, loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, carry, batch.inputs, batch.targets, key
        )
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(params, opt_state, state.step + 1, carry)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr_schedule(state.step), "finite": finite}
        return new, metrics

    return jax.jit(train_step, donate_argnums=0)


def make_eval_step(lm: LanguageModel) -> Callable:
    """Jitted `(params, carry, inputs, targets, weights) -> (carry, nll_sum, count)`."""

    def eval_step(params, carry, inputs, targets, weights):
        carry, nll = lm.nll(params, carry, inputs, targets)
        nll = nll * weights.T
        return carry, nll.sum(), weights.sum()

    return jax.jit(eval_step)


def evaluate(lm: LanguageModel, eval_step: Callable, params: Any, ids: np.ndarray, config: ConfigDict) -> float:
    """Mean per-token NLL (nats) over a whole split, the state carried from chunk to chunk."""
    inputs, targets, weights = batching.eval_chunks(ids, config.eval.batch_size, config.eval.seq_len)
    carry = lm.initial_carry(config.eval.batch_size)
    total, count = 0.0, 0.0
    for x, y, w in zip(inputs, targets, weights):
        carry, nll, n = eval_step(params, carry, x, y, w)
        total += float(nll)
        count += float(n)
    return total / count


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
    lr_scale: float  # learning-rate multiplier, halved by each rollback


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _scaled(schedule: optax.Schedule, factor: float) -> optax.Schedule:
    return schedule if factor == 1.0 else (lambda step: factor * schedule(step))


def position(step: int, steps_per_epoch: int) -> str:
    """"step 468 (epoch 2, batch 78 of 390)": how the stop and resume messages name a point in training."""
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
    workdir = run.path
    t = config.train
    train_ids = corpus.splits["train"]
    spe = batching.steps_per_epoch(len(train_ids), t.batch_size, t.seq_len, config.data.sampling)
    total_steps = spe * t.num_epochs
    if t.max_steps > 0:
        total_steps = min(total_steps, t.max_steps)
    check_fits(config, corpus.vocab_size, *parallel.memory_limit())
    lm = make_lm(config, corpus.vocab_size)

    def build_step(lr_scale: float) -> tuple[optax.GradientTransformation, Callable]:
        lr_schedule = _scaled(optim.schedule(config, spe, total_steps), lr_scale)
        opt = optim.optimizer(config, lr_schedule)
        return opt, make_train_step(lm, opt, lr_schedule, config)

    root = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(root)
    layout = parallel.make_layout(config)
    step_key = parallel.replicate(layout, step_key)  # so a restored key lands on the mesh too
    new_carry = parallel.carry_maker(layout, lm.initial_carry)
    opt, train_step = build_step(1.0)
    fresh = parallel.place_state(layout, init_state(lm, opt, init_key, t.batch_size))
    template = (_abstract(fresh.params), _abstract(checkpoint.train_items(fresh, step_key)))
    n_params = num_params(fresh.params)
    eval_step = make_eval_step(lm)
    keep_carry = batching.carries_state(config.data.sampling)
    main = parallel.is_main_process()  # only process 0 writes files and logs
    log = log if main else (lambda _: None)
    ckpts = checkpoint.Checkpoints(workdir, config, log)
    start_tally = Tally([], None, 0.0, 0, 0, 1.0)

    def check_resume(meta: dict) -> None:
        """Refuse a checkpoint this run cannot continue (the run directory already checked config.json
        against the config; this checks the checkpoint's own copy); runs before any array is read."""
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

    def restore_latest(initial: TrainState | None = None) -> tuple[TrainState, Tally, Any, dict | None]:
        """The newest good checkpoint's state, tally, step key and meta; `initial` (or a fresh
        initialisation) if there is none."""
        restored = ckpts.restore_latest(*template, check=check_resume)
        if restored is None:
            if initial is None:
                initial = parallel.place_state(layout, init_state(lm, opt, init_key, t.batch_size))
            return initial, start_tally, step_key, None
        tr = restored.train
        state = TrainState(restored.params, tr["opt_state"], tr["step"], tr["carry"])
        tally = Tally(**{k: restored.meta[k] for k in Tally._fields})
        return state, tally, jax.random.wrap_key_data(tr["rng"]), restored.meta

    state, tally, step_key, meta = restore_latest(fresh)
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
        if tally.lr_scale != 1.0:
            opt, train_step = build_step(tally.lr_scale)
    run.write_vocab(corpus.vocab)
    metrics_log = run.metrics(keep=tally.records)
    log(f"{corpus.name}: {len(train_ids):,} train tokens, vocab {corpus.vocab_size:,}; "
        f"{config.model.cell} {lm.sizes}, {n_params:,} params; {spe:,} steps/epoch, {total_steps:,} steps")
    progress = Progress(total_steps, tokens_per_step=t.batch_size * t.seq_len, log=log)
    t0 = time.time()

    def run_eval(split: str, step: int, epoch: float) -> float:
        nll = evaluate(lm, eval_step, parallel.local_copy(state.params), corpus.splits[split], config)
        metrics_log.write({"step": step, "epoch": epoch, "split": split, "loss": nll, "perplexity": perplexity(nll),
                           "bpt": nll / math.log(2), "wall_s": time.time() - t0})
        return nll

    def save(step: int, valid_ppl: float | None) -> None:
        meta = {"step": step, "epoch": step // spe, "index": step % spe, "steps_per_epoch": spe,
                "total_steps": total_steps, "sampling": config.data.sampling, "seed": config.seed,
                "num_devices": layout.mesh.size, "config": config.to_dict(), "vocab": corpus.vocab,
                **tally._replace(records=metrics_log.records)._asdict()}
        ckpts.save(step, state.params, checkpoint.train_items(state, step_key), meta, valid_ppl)

    step = start
    pending = None  # metrics of the step in flight, read one step later (keeps dispatch async)
    try:
        with StopSignals() as stop:
            while step < total_steps:
                epoch, index = divmod(step, spe)
                if index == 0 or not keep_carry:
                    state = state._replace(carry=new_carry())
                batch = parallel.place_batch(layout, lambda rows: batching.train_batch(
                    train_ids, t.batch_size, t.seq_len, config.data.sampling, config.seed, epoch, index, rows))
                state, metrics = train_step(state, batch, step_key)
                try:
                    if pending is not None:
                        tally = _record(pending, metrics_log, progress, t.log_every, tally)
                    pending = (step, epoch, metrics)
                    step += 1
                    last_of_epoch = step % spe == 0
                    eval_due = config.eval.every_steps > 0 and step % config.eval.every_steps == 0
                    boundary = last_of_epoch or step == total_steps or eval_due
                    if not (boundary or stop.received or ckpts.due(step) or
                            (config.checkpoint.every_steps > 0 and step % config.checkpoint.every_steps == 0)):
                        continue
                    tally = _record(pending, metrics_log, progress, t.log_every, tally, force=boundary)
                    pending = None
                except NonFiniteLoss as e:
                    if t.on_nonfinite == "stop" or tally.lr_scale < 1e-3:
                        ckpts.wait()
                        last = ckpts.steps()
                        raise NonFiniteLoss(
                            f"{e}; stopped, the last good checkpoint is step {last[-1] if last else 'none'} "
                            f"(train.on_nonfinite=rollback restores it with the learning rate halved)") from None
                    bad_step = pending[0] + 1
                    lr_scale = tally.lr_scale / 2
                    metrics_log.close()
                    state, tally, step_key, _ = restore_latest()
                    tally = tally._replace(lr_scale=lr_scale)
                    opt, train_step = build_step(lr_scale)
                    step, pending = int(state.step), None
                    metrics_log = run.metrics(keep=tally.records)
                    metrics_log.write({"step": step, "epoch": step / spe, "event": "rollback",
                                       "nonfinite_step": bad_step, "lr_scale": lr_scale})
                    log(f"non-finite loss at step {bad_step:,}: rolled back to step {step:,}, "
                        f"learning rate x{lr_scale:g}")
                    continue
                valid_ppl = None
                if eval_due or (last_of_epoch and (step // spe) % config.eval.every_epochs == 0) \
                        or step == total_steps:
                    valid_nll = run_eval("valid", step, step / spe)
                    valid_ppl = perplexity(valid_nll)
                    tally = tally._replace(history=tally.history + [valid_ppl], valid_nll=valid_nll)
                    log(f"epoch {step / spe:.2f}: train ppl {perplexity(tally.epoch_nll / max(tally.epoch_n, 1)):.2f}, "
                        f"valid ppl {valid_ppl:.3f}")
                    if config.eval.sample_length > 0:
                        log(sampling.progress_sample(lm, parallel.local_copy(state.params), corpus, config, step))
                if last_of_epoch:
                    tally = tally._replace(epoch_nll=0.0, epoch_n=0)
                save(step, valid_ppl)
                if stop.received and step < total_steps:
                    ckpts.wait()
                    raise Preempted(f"stopped by {stop.received} at {position(step, spe)}; checkpoint written "
                                    f"to {ckpts.root}. Resume with: rnnjax train --workdir {workdir}")
    finally:
        ckpts.close()
    train_wall = time.time() - t0
    test_nll = run_eval("test", total_steps, total_steps / spe)
    metrics_log.close()
    valid_nll = float("nan") if tally.valid_nll is None else tally.valid_nll
    core = {"steps": total_steps, "epochs": total_steps / spe, "num_params": n_params, "wall_s": time.time() - t0,
            "tokens_per_s": (total_steps - start) * t.batch_size * t.seq_len / max(train_wall, 1e-9),
            "num_devices": layout.mesh.size, "num_processes": jax.process_count()}
    summary = make_summary("lm", "test_ppl", "min", core, {
        "valid_ppl": perplexity(valid_nll),
        "test_ppl": perplexity(test_nll),
        "best_valid_ppl": min(tally.history) if tally.history else None,
        "valid_loss": valid_nll,
        "test_loss": test_nll,
        "corpus": corpus.name,
        "level": corpus.level,  # "char": rnnjax report adds bits per character
        "floor_ppl": corpus.floor_ppl,
    })
    run.write_summary(summary)
    return summary


def _record(pending, metrics_log: MetricsWriter, progress: Progress, log_every: int, tally: Tally,
            force: bool = False) -> Tally:
    """Read a finished step's metrics on the host: stop on a non-finite loss, log, progress."""
    step, epoch, metrics = pending
    m = jax.device_get(metrics)
    if not m["finite"]:
        raise NonFiniteLoss(f"non-finite loss or gradient at step {step + 1} (epoch {epoch + 1})")
    tally = tally._replace(epoch_nll=tally.epoch_nll + float(m["loss"]), epoch_n=tally.epoch_n + 1)
    progress.update(step + 1)
    if (step + 1) % log_every == 0 or force:
        record = {"step": step + 1, "epoch": epoch + 1, "split": "train", "loss": float(m["loss"]),
                  "perplexity": perplexity(float(m["loss"])), "tokens_per_s": progress.tokens_per_s(),
                  "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"])}
        metrics_log.write(record)
        progress.report(record)
    return tally
