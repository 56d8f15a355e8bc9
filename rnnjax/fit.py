"""Shuffled-minibatch training for the small tasks (sine, sentiment), and their evaluation records.

The language model and echo train in `rnnjax.loop`'s host loop; these two still use this
simpler loop (no checkpoints, resume, signals or data parallelism) until they move there.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import optim
from rnnjax.config import ConfigDict
from rnnjax.errors import ConfigError
from rnnjax.rundir import MetricsWriter

SPLITS = ("train", "valid", "test")


def write_split_records(metrics_log: MetricsWriter, step: int, epoch: float, result: dict, **extra) -> None:
    """One metrics.jsonl record per split named in `result`'s keys: {"test_mse": x} -> split "test", "mse": x.

    Every task's evaluation records then read like the language model's: `step`, `epoch`
    (epochs done), `split`, and that split's metrics.
    """
    for split in SPLITS:
        values = {k[len(split) + 1:]: v for k, v in result.items() if k.startswith(f"{split}_")}
        if values:
            metrics_log.write({"step": step, "epoch": epoch, "split": split, **values, **extra})


def fit(loss_fn: Callable, params: Any, data: tuple[np.ndarray, ...], config: ConfigDict,
        evaluate: Callable[[Any, int], dict], metrics_log: MetricsWriter, log: Callable[[str], None],
        select: str | None = None) -> tuple[Any, dict]:
    """Shuffled minibatch training of `loss_fn(params, batch, key) -> loss` over `data` (arrays, first axis = examples).

    Calls `evaluate(params, epoch)` after every `eval.every_epochs` epochs and logs its
    dict. Returns the final parameters and evaluation, or with `select` (a key of the
    evaluation dict, higher is better) those of the best evaluation; the evaluation dict
    also holds the `steps` and `epochs` trained.
    """
    t = config.train
    n = len(data[0])
    spe = n // t.batch_size
    if spe < 1:
        raise ConfigError(f"config key 'train.batch_size' = {t.batch_size}: larger than the {n} training examples")
    total = spe * t.num_epochs if t.max_steps <= 0 else min(spe * t.num_epochs, t.max_steps)
    lr_schedule = optim.schedule(config, spe, total)
    opt = optim.optimizer(config, lr_schedule)

    def train_step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    train_step = jax.jit(train_step, donate_argnums=(0, 1))
    opt_state = opt.init(params)
    key = jax.random.key(config.seed + 1)
    best, best_eval, result = None, None, None
    start, step = time.time(), 0
    for epoch in range(math.ceil(total / spe)):
        order = np.random.default_rng([config.seed, epoch]).permutation(n)
        losses = []
        for i in range(min(spe, total - step)):
            idx = order[i * t.batch_size : (i + 1) * t.batch_size]
            params, opt_state, loss = train_step(params, opt_state, tuple(a[idx] for a in data),
                                                 jax.random.fold_in(key, step))
            losses.append(loss)
            step += 1
            if step % t.log_every == 0:
                metrics_log.write({"step": step, "epoch": step / spe, "split": "train", "loss": float(loss)})
        last = step == total
        if (epoch + 1) % config.eval.every_epochs == 0 or last:
            result = evaluate(params, epoch + 1)
            write_split_records(metrics_log, step, step / spe, result, wall_s=time.time() - start)
            log(" | ".join([f"epoch {epoch + 1}", f"train_loss {float(np.mean(losses)):.6g}"] +
                           [f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()]))
            if select is not None and (best_eval is None or result[select] > best_eval[select]):
                best, best_eval = jax.tree.map(jnp.copy, params), dict(result, epoch=epoch + 1)
    trained = {"steps": step, "epochs": step / spe}
    if select is not None:
        return best, {**best_eval, **trained}
    return params, {**result, **trained}
