"""The Optax pipeline: global-norm clipping, then SGD / Adam / AdamW on a schedule, then a learning-rate scale.

The scale (1 unless a rollback halved it, `train.on_nonfinite=rollback`) is a hyperparameter
injected into the optimizer state (`optax.inject_hyperparams`), so it is checkpointed with
that state and changing it needs no new optimizer and no recompiled step.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from rnnjax.config import ConfigDict


def schedule(config: ConfigDict, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Learning rate as a function of the step.

    "step" is Zaremba et al.'s: constant for `decay_after_epochs` epochs, then multiplied
    by `decay_rate` at the start of every later epoch (lr * rate ** max(epoch + 1 - M, 0)).
    """
    t = config.train
    lr = t.learning_rate
    if t.schedule == "constant":
        return optax.constant_schedule(lr)
    if t.schedule == "step":
        begin = steps_per_epoch * max(t.decay_after_epochs - 1, 0)
        return optax.exponential_decay(lr, steps_per_epoch, t.decay_rate, transition_begin=begin, staircase=True)
    if t.schedule == "cosine":
        return optax.cosine_decay_schedule(lr, max(total_steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, lr, t.warmup_steps, max(total_steps, t.warmup_steps + 1))


def optimizer(config: ConfigDict, lr_schedule: optax.Schedule) -> optax.GradientTransformation:
    t = config.train
    if t.optimizer == "sgd":
        opt = optax.sgd(lr_schedule)
    elif t.optimizer == "adam":
        opt = optax.adam(lr_schedule)
    else:
        opt = optax.adamw(lr_schedule, weight_decay=t.weight_decay)
    scale = optax.inject_hyperparams(optax.scale)(step_size=1.0)
    return optax.chain(optax.clip_by_global_norm(t.clip_norm), opt, scale) if t.clip_norm > 0 else \
        optax.chain(opt, scale)


def lr_scale(opt_state: Any) -> jax.Array:
    """The learning-rate scale held in an `optimizer()` state (its last element)."""
    return opt_state[-1].hyperparams["step_size"]


def with_lr_scale(opt_state: Any, scale: float) -> Any:
    """`opt_state` with its learning-rate scale set to `scale` (same dtype and placement)."""
    old = lr_scale(opt_state)
    new = jax.device_put(jnp.asarray(scale, old.dtype), old.sharding)
    last = opt_state[-1]
    return (*opt_state[:-1], last._replace(hyperparams={**last.hyperparams, "step_size": new}))
