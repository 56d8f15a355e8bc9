"""The pure part of training the language model: its state, the jitted train and eval steps.

    state, metrics = train_step(state, batch, key)

`state` holds everything the next step depends on (params, optimizer state with its
learning-rate scale, step, the RNN carry for truncated BPTT); the step's dropout key is
`fold_in(key, state.step)`. The step is jitted once with the state's buffers donated.
The host loop that drives it is `rnnjax.loop`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import batching, optim
from rnnjax.config import ConfigDict
from rnnjax.model import LanguageModel

Array = jax.Array


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Array  # int32 scalar
    carry: Any  # RNN state carried to the next batch (truncated BPTT)


class Model(NamedTuple):
    """What a train state is made from: `init(key) -> params`, `initial_carry(batch_size) -> carry`
    (a `LanguageModel` is one; tasks that carry nothing between batches return ())."""

    init: Callable[[Array], Any]
    initial_carry: Callable[[int], Any]


def init_state(model: Any, opt: optax.GradientTransformation, key: Array, batch_size: int) -> TrainState:
    """The state before the first step; `model` has `init(key) -> params` and `initial_carry(batch)`."""
    params = model.init(key)
    return TrainState(params, opt.init(params), jnp.zeros((), jnp.int32), model.initial_carry(batch_size))


Objective = Callable[[Any, Any, Any, Array], tuple[Array, tuple[Any, Array]]]
"""`objective(params, carry, batch, key) -> (value to minimise, (next carry, loss to report))`."""


def lm_objective(lm: LanguageModel, config: ConfigDict) -> Objective:
    """The language model's: the mean per-token cross entropy, times `seq_len` when
    `train.time_sum_loss` (Zaremba's batch-mean loss summed over the unrolled steps)."""
    scale = float(config.train.seq_len) if config.train.time_sum_loss else 1.0

    def objective(params, carry, batch: batching.Batch, key):
        carry, nll = lm.nll(params, carry, batch.inputs, batch.targets, key=key)
        loss = nll.mean()
        return loss * scale, (carry, loss)

    return objective


def train_step_fn(objective: Objective, opt: optax.GradientTransformation, lr_schedule: optax.Schedule
                  ) -> Callable:
    """The pure `train_step(state, batch, key) -> (state, metrics)` of any task's objective
    (`make_step` jits it; `rnnjax.population` vmaps it first).

    A step whose loss or gradient is not finite leaves the state unchanged and reports
    `finite = False`, so the last good state survives.
    """

    def train_step(state: TrainState, batch: Any, key: Array) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(key, state.step)
        carry = jax.lax.stop_gradient(state.carry)
        (_, (carry, loss)), grads = jax.value_and_grad(objective, has_aux=True)(state.params, carry, batch, key)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(params, opt_state, state.step + 1, carry)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        lr = lr_schedule(state.step) * optim.lr_scale(state.opt_state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr, "finite": finite}
        return new, metrics

    return train_step


def make_step(objective: Objective, opt: optax.GradientTransformation, lr_schedule: optax.Schedule) -> Callable:
    """`train_step_fn`'s step, jitted once with the state's buffers donated."""
    return jax.jit(train_step_fn(objective, opt, lr_schedule), donate_argnums=0)


def make_train_step(lm: LanguageModel, opt: optax.GradientTransformation, lr_schedule: optax.Schedule,
                    config: ConfigDict) -> Callable:
    """The language model's jitted `train_step(state, batch, key) -> (state, metrics)`."""
    return make_step(lm_objective(lm, config), opt, lr_schedule)


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
