"""min_gru / min_lstm (Feng et al. 2024): the parallel scan equals the sequential recurrence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import cells, recurrent
from rnnjax.config import defaults
from rnnjax.model import make_lm

MIN_CELLS = ["min_gru", "min_lstm"]


def _setup(name, t=37, b=3, i=4, h=5):
    cell = cells.get_cell(name)
    k1, k2 = jax.random.split(jax.random.key(0))
    params = cell.init(k1, i, h)
    carry = cells.RNNCarry(jnp.linspace(-1.0, 1.0, b * h).reshape(b, h))
    return cell, params, carry, jax.random.normal(k2, (t, b, i))


@pytest.mark.parametrize("name", MIN_CELLS)
@pytest.mark.parametrize("reverse", [False, True])
def test_parallel_matches_sequential_values_and_grads(name, reverse):
    cell, params, carry, xs = _setup(name)

    def loss(fast):
        def f(params, carry, xs):
            c, ys = recurrent.unroll(cell, params, carry, xs, reverse=reverse, fast=fast)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(c.h**2)

        return jax.jit(jax.value_and_grad(f, (0, 1, 2)))

    got, want = loss(True)(params, carry, xs), loss(False)(params, carry, xs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MIN_CELLS)
def test_sampling_steps_match_parallel_form(name):
    """Stepping `cells.step` one token at a time (as sampling does) gives the parallel outputs."""
    cell, params, carry, xs = _setup(name)
    final, ys = recurrent.unroll(cell, params, carry, xs, fast=True)
    c = carry
    for t in range(xs.shape[0]):
        c, y = cells.step(cell, params, c, xs[t])
        np.testing.assert_allclose(y, ys[t], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.h, final.h, rtol=1e-5, atol=1e-6)


def test_min_gru_and_min_lstm_formulas():
    """One step against the paper's equations written out in NumPy."""
    x, h = np.array([[0.3, -1.2]], np.float32), np.array([[0.5, -0.25]], np.float32)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for name, gates in (("min_gru", 2), ("min_lstm", 3)):
        cell = cells.get_cell(name)
        params = cell.init(jax.random.key(1), 2, 2)
        assert set(params) == {"wi", "bi"} and params["wi"].shape == (2, gates * 2)
        pre = x @ np.asarray(params["wi"]) + np.asarray(params["bi"])
        if name == "min_gru":
            z, ht = sig(pre[:, :2]), pre[:, 2:]
            want = (1 - z) * h + z * ht
        else:
            f, i, ht = sig(pre[:, :2]), sig(pre[:, 2:4]), pre[:, 4:]
            want = f / (f + i) * h + i / (f + i) * ht
        _, y = cells.step(cell, params, cells.RNNCarry(jnp.asarray(h)), jnp.asarray(x))
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)


def test_min_lstm_gates_stay_finite_where_both_underflow():
    """Both gate pre-activations far below zero: f / (f + i) was 0 / 0 (values) or inf - inf
    (gradients); the normalised gates must stay the pair's share, with finite gradients."""
    pre = jnp.array([[-30.0, -60.0, -120.0, -200.0]])
    f_pre, i_pre = pre, pre + jnp.array([[0.0, 1.0, -2.0, 0.0]])
    xp = jnp.concatenate([f_pre, i_pre, jnp.ones_like(pre)], axis=-1)
    a, b = cells._min_lstm_coeffs(xp)
    # sigmoid(x) = exp(x) down there, so f / (f + i) = 1 / (1 + exp(i_pre - f_pre))
    want = 1 / (1 + np.exp(np.asarray(i_pre - f_pre, np.float64)))
    np.testing.assert_allclose(a, want, rtol=1e-6)
    np.testing.assert_allclose(b, 1 - want, rtol=1e-6)
    grads = jax.grad(lambda xp: jnp.sum(cells._min_lstm_coeffs(xp)[0] * jnp.arange(1.0, 5.0)))(xp)
    assert np.isfinite(np.asarray(grads)).all()


@pytest.mark.parametrize("name", MIN_CELLS)
def test_lm_with_min_cell_fast_equals_reference(name):
    config = defaults()
    config.model.cell = name
    config.model.hidden_size = 8
    tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 13)
    out = {}
    for impl in ("fast", "reference"):
        config.model.impl = impl
        lm = make_lm(config, 13)
        params = lm.init(jax.random.key(3))
        out[impl] = jax.value_and_grad(lambda p: lm.nll(p, lm.initial_carry(2), tokens, tokens)[1].mean())(params)
    for a, b in zip(jax.tree.leaves(out["fast"]), jax.tree.leaves(out["reference"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
