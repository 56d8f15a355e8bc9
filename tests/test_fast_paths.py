"""The fast paths (`model.impl = "fast"`) give the reference path's values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnjax import cells, recurrent
from rnnjax.config import defaults
from rnnjax.model import decoder_nll, make_lm, token_nll

CELLS = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def _close(a, b, tol=2e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("cell_name,reverse", [(c, False) for c in CELLS] + [("gru", True)])
def test_scan_with_vjp_matches_autodiff(cell_name, reverse):
    cell = cells.get_cell(cell_name)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k1, 3, 5)
    carry = jax.tree.map(lambda z: z + 0.3, cell.initial_carry((4,), 5))
    xs = jax.random.normal(k2, (6, 4, 3))
    w_out = jax.random.normal(k3, (6, 4, 5))

    def loss(fast):
        def f(params, carry, xs):
            c, ys = recurrent.unroll(cell, params, carry, xs, reverse=reverse, fast=fast)
            return jnp.sum(ys * w_out) + sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(c))

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    _close(loss(True)(params, carry, xs), loss(False)(params, carry, xs))
    _close(recurrent.unroll(cell, params, carry, xs, reverse=reverse, fast=True),
           recurrent.unroll(cell, params, carry, xs, reverse=reverse))


def test_decoder_nll_matches_optax():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    h, w = jax.random.normal(k1, (12, 7)), jax.random.normal(k2, (30, 7))  # w [V, H]
    b, t = jax.random.normal(k3, (30,)), jax.random.randint(k4, (12,), 0, 30)
    g = jnp.linspace(0.1, 2.0, 12)

    def fused(h, w, b):
        return jnp.sum(decoder_nll(h, w, b, t) * g)

    def reference(h, w, b):
        return jnp.sum(token_nll((h @ w.T + b)[:, None, :], t[None, :])[:, 0] * g)

    _close(jax.value_and_grad(fused, (0, 1, 2))(h, w, b), jax.value_and_grad(reference, (0, 1, 2))(h, w, b))


@pytest.mark.parametrize("cell_name,tie", [(c, False) for c in CELLS] + [("lstm", True)])
def test_lm_nll_fast_equals_reference(cell_name, tie):
    """Whole LM: loss and gradients of every parameter, with dropout, both impls."""
    config = defaults()
    config.model.cell = cell_name
    config.model.hidden_size = 8
    config.model.dropout = 0.3
    config.model.tie_embeddings = tie
    tokens = jax.random.randint(jax.random.key(2), (3, 6), 0, 11)
    targets = jax.random.randint(jax.random.key(3), (3, 6), 0, 11)
    out = {}
    for impl in ("fast", "reference"):
        config.model.impl = impl
        lm = make_lm(config, 11)
        params = lm.init(jax.random.key(4))

        def loss(params):
            carries, nll = lm.nll(params, lm.initial_carry(3), tokens, targets, key=jax.random.key(5))
            return nll.mean(), carries

        out[impl] = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    _close(out["fast"], out["reference"])
    # the reference nll is the optax cross entropy of `apply`'s logits
    _, logits = lm.apply(params, lm.initial_carry(3), tokens)
    _close(lm.nll(params, lm.initial_carry(3), tokens, targets)[1], token_nll(logits, targets))


@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_float64_lm_loss_and_gradients_are_float64(impl):
    """A float64 LM computes its loss in float64: both impls agree to round-off, and the
    gradient matches finite differences at float64 precision."""
    config = defaults()
    config.model.cell = "lstm"
    config.model.hidden_size = 6
    config.model.impl = impl
    lm = make_lm(config, 11)
    tokens = jax.random.randint(jax.random.key(2), (2, 5), 0, 11)
    targets = jax.random.randint(jax.random.key(3), (2, 5), 0, 11)
    with jax.enable_x64(True):
        params = lm.init(jax.random.key(4), jnp.float64)

        def loss(params):
            return lm.nll(params, lm.initial_carry(2, jnp.float64), tokens, targets)[1].sum()

        value, grads = jax.value_and_grad(loss)(params)
        assert {a.dtype for a in jax.tree.leaves((value, grads))} == {jnp.dtype(jnp.float64)}
        _, logits = lm.apply(params, lm.initial_carry(2, jnp.float64), tokens)
        want = -jnp.take_along_axis(jax.nn.log_softmax(logits), targets.T[..., None], -1).sum()
        np.testing.assert_allclose(value, want, rtol=1e-14)
        check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-8, rtol=1e-8)
