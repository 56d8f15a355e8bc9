"""No recompilation after the first step: training and evaluation compile once.

Compilations are counted with jax.monitoring's backend-compile event, which JAX records
once for every XLA compilation (a cache hit records nothing).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import batching, optim
from rnnjax.config import defaults
from rnnjax.model import make_lm
from rnnjax.steps import evaluate, init_state, make_eval_step, make_train_step

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
    names: list[str] = []

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == COMPILE_EVENT:
            names.append(kwargs.get("fun_name", "?"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def _config(cell: str, impl: str):
    c = defaults()
    c.model.cell = cell
    c.model.impl = impl
    c.model.hidden_size = 8
    c.model.dropout = 0.2
    c.train.batch_size = 3
    c.train.seq_len = 5
    c.eval.batch_size = 2
    c.eval.seq_len = 7
    return c


@pytest.mark.parametrize("cell,impl", [("lstm", "fast"), ("gru", "reference"), ("min_gru", "fast")])
def test_train_and_eval_compile_once(cell, impl):
    config = _config(cell, impl)
    ids = np.random.default_rng(0).integers(0, 17, 400).astype(np.int32)
    lm = make_lm(config, 17)
    sched = optim.schedule(config, 10, 10)
    opt = optim.optimizer(config, sched)
    key = jax.random.key(0)
    state = init_state(lm, opt, key, 3)
    train_step = make_train_step(lm, opt, sched, config)
    eval_step = make_eval_step(lm)

    def batch(i):  # as the training loop builds it
        return batching.Batch(*map(jnp.asarray, batching.train_batch(ids, 3, 5, "contiguous", 0, 0, i)))

    state, _ = train_step(state, batch(0), key)
    evaluate(lm, eval_step, state.params, ids[:100], config)
    with count_compiles() as compiled:
        for i in range(1, 6):
            if i == 3:  # the loop resets the carry at an epoch start
                state = state._replace(carry=lm.initial_carry(3))
            state, metrics = train_step(state, batch(i), key)
        jax.block_until_ready(metrics)
        evaluate(lm, eval_step, state.params, ids[100:220], config)
    assert compiled == []
    assert train_step._cache_size() == 1 and eval_step._cache_size() == 1


def test_counter_sees_a_recompilation():
    """The counter works: a new input shape compiles again."""
    f = jax.jit(lambda x: x * 2)
    x3, x4 = jnp.ones(3), jnp.ones(4)
    f(x3)
    with count_compiles() as compiled:
        f(x3)
        f(x4)
    assert compiled == ["jit(<lambda>)"]


def test_sampling_compiles_once_per_shape():
    """Samples printed at every evaluation reuse one program (new params, new key)."""
    from rnnjax.sampling import Sampler, generate

    config = _config("lstm", "fast")
    lm = make_lm(config, 17)
    prime = np.array([1, 2, 3], np.int32)
    generate(lm, lm.init(jax.random.key(0)), prime, 6, jax.random.key(1), Sampler())
    with count_compiles() as names:
        for seed in range(3):
            out = generate(lm, lm.init(jax.random.key(seed + 5)), prime, 6, jax.random.key(seed), Sampler())
            assert out.shape == (1, 6)
    assert names == []
