"""Training and evaluation of the language model: a pure jitted `train_step` and the loop.

    state, metrics = train_step(state, batch, key)

`state` holds everything the next step depends on (params, optimizer state, step, the
RNN carry for truncated BPTT); the step's dropout key is `fold_in(key, state.step)`.
The step is jitted once with the state's buffers donated.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import batching, optim, sampling
from rnnjax.config import ConfigDict
from rnnjax.data import Corpus
from rnnjax.model import LanguageModel, make_lm, num_params
from rnnjax.progress import Progress
from rnnjax.run_files import MetricsLog, write_json_atomic

Array = jax.Array


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array  # int32 scalar
    carry: Any  # RNN state carried to the next batch (truncated BPTT)


class NonFiniteLoss(RuntimeError):
    pass


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
        grad_norm = optax.global_norm(grads)
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


def _ppl(nll: float) -> float:
    return math.exp(min(nll, 700.0))


def train(config: ConfigDict, corpus: Corpus, workdir: Path, log: Callable[[str], None] = print,
          on_done: Callable[[TrainState], None] | None = None) -> dict:
    """Train `config` on `corpus`, writing metrics.jsonl and summary.json into `workdir`.

    `on_done(state)` is called with the final state before the test evaluation.
    """
    t = config.train
    train_ids = corpus.splits["train"]
    spe = batching.steps_per_epoch(len(train_ids), t.batch_size, t.seq_len, config.data.sampling)
    total_steps = spe * t.num_epochs
    if t.max_steps > 0:
        total_steps = min(total_steps, t.max_steps)
    lm = make_lm(config, corpus.vocab_size)
    lr_schedule = optim.schedule(config, spe, total_steps)
    opt = optim.optimizer(config, lr_schedule)
    root = jax.random.key(config.seed)
    init_key, step_key = jax.random.split(root)
    state = init_state(lm, opt, init_key, t.batch_size)
    n_params = num_params(state.params)
    train_step = make_train_step(lm, opt, lr_schedule, config)
    eval_step = make_eval_step(lm)
    keep_carry = batching.carries_state(config.data.sampling)

    metrics_log = MetricsLog(workdir / "metrics.jsonl")
    log(f"{corpus.name}: {len(train_ids):,} train tokens, vocab {corpus.vocab_size:,}; "
        f"{config.model.cell} {lm.sizes}, {n_params:,} params; {spe:,} steps/epoch, {total_steps:,} steps")
    progress = Progress(total_steps, tokens_per_step=t.batch_size * t.seq_len, log=log)

    def run_eval(split: str, step: int, epoch: float) -> float:
        nll = evaluate(lm, eval_step, state.params, corpus.splits[split], config)
        metrics_log.write({"step": step, "epoch": epoch, "split": split, "loss": nll, "perplexity": _ppl(nll),
                           "bpt": nll / math.log(2), "wall_s": time.time() - start})
        return nll

    start = time.time()
    history: list[float] = []
    epoch_nll, epoch_n = 0.0, 0
    pending = None  # metrics of the step in flight, read one step later (keeps dispatch async)
    valid_nll = float("nan")
    for step in range(total_steps):
        epoch, index = divmod(step, spe)
        if index == 0 or not keep_carry:
            state = state._replace(carry=lm.initial_carry(t.batch_size))
        batch = batching.train_batch(train_ids, t.batch_size, t.seq_len, config.data.sampling, config.seed, epoch,
                                     index)
        state, metrics = train_step(state, batching.Batch(*map(jnp.asarray, batch)), step_key)
        if pending is not None:
            epoch_nll, epoch_n = _record(pending, metrics_log, progress, t.log_every, epoch_nll, epoch_n)
        pending = (step, epoch, metrics)
        last_of_epoch = index == spe - 1
        eval_due = config.eval.every_steps > 0 and (step + 1) % config.eval.every_steps == 0
        if last_of_epoch or step == total_steps - 1 or eval_due:
            epoch_nll, epoch_n = _record(pending, metrics_log, progress, t.log_every, epoch_nll, epoch_n, force=True)
            pending = None
            if eval_due or (last_of_epoch and (epoch + 1) % config.eval.every_epochs == 0) or step == total_steps - 1:
                valid_nll = run_eval("valid", step + 1, (step + 1) / spe)
                history.append(_ppl(valid_nll))
                log(f"epoch {(step + 1) / spe:.2f}: train ppl {_ppl(epoch_nll / max(epoch_n, 1)):.2f}, "
                    f"valid ppl {_ppl(valid_nll):.3f}")
                if config.eval.sample_length > 0:
                    log(sampling.progress_sample(lm, state.params, corpus, config, step + 1))
            if last_of_epoch:
                epoch_nll, epoch_n = 0.0, 0
    train_wall = time.time() - start
    if on_done is not None:
        on_done(state)
    test_nll = run_eval("test", total_steps, total_steps / spe)
    metrics_log.close()
    summary = {
        "valid_ppl": _ppl(valid_nll),
        "test_ppl": _ppl(test_nll),
        "best_valid_ppl": min(history) if history else None,
        "valid_loss": valid_nll,
        "test_loss": test_nll,
        "steps": total_steps,
        "epochs": total_steps / spe,
        "tokens_per_s": total_steps * t.batch_size * t.seq_len / train_wall,
        "num_params": n_params,
        "wall_s": time.time() - start,
        "jax_version": jax.__version__,
        "device_kind": jax.devices()[0].device_kind,
        "num_devices": jax.device_count(),
        "corpus": corpus.name,
        "level": corpus.level,  # "char": rnnjax report adds bits per character
        "floor_ppl": corpus.floor_ppl,
    }
    write_json_atomic(workdir / "summary.json", summary)
    return summary


def _record(pending, metrics_log: MetricsLog, progress: Progress, log_every: int, epoch_nll: float, epoch_n: int,
            force: bool = False) -> tuple[float, int]:
    """Read a finished step's metrics on the host: stop on a non-finite loss, log, progress."""
    step, epoch, metrics = pending
    m = jax.device_get(metrics)
    if not m["finite"]:
        raise NonFiniteLoss(f"non-finite loss or gradient at step {step + 1} (epoch {epoch + 1}); "
                            f"the parameters of step {step} are kept")
    epoch_nll, epoch_n = epoch_nll + float(m["loss"]), epoch_n + 1
    progress.update(step + 1)
    if (step + 1) % log_every == 0 or force:
        record = {"step": step + 1, "epoch": epoch + 1, "split": "train", "loss": float(m["loss"]),
                  "perplexity": _ppl(float(m["loss"])), "tokens_per_s": progress.tokens_per_s(),
                  "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"])}
        metrics_log.write(record)
        progress.report(record)
    return epoch_nll, epoch_n
