"""Cells against a NumPy reference, gradients against finite differences, registration."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnjax import cells

CELL_NAMES = ["rnn_tanh", "rnn_relu", "gru", "lstm"]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_step(name, p, carry, x):
    """Independent NumPy transcription of the PyTorch equations, gate by gate."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    h = np.asarray(carry.h, np.float64)
    H = h.shape[-1]
    wi = {g: p["wi"][:, i * H:(i + 1) * H] for i, g in enumerate("abcd"[: p["wi"].shape[1] // H])}
    wh = {g: p["wh"][:, i * H:(i + 1) * H] for i, g in enumerate("abcd"[: p["wh"].shape[1] // H])}
    bi = {g: p["bi"][i * H:(i + 1) * H] for i, g in enumerate("abcd"[: p["bi"].shape[0] // H])}
    if name.startswith("rnn"):
        pre = x @ wi["a"] + bi["a"] + h @ wh["a"]
        out = np.tanh(pre) if name == "rnn_tanh" else np.maximum(pre, 0)
        return (out,), out
    if name == "gru":
        bh = {g: p["bh"][i * H:(i + 1) * H] for i, g in enumerate("abc")}
        r = sigmoid(x @ wi["a"] + bi["a"] + h @ wh["a"] + bh["a"])
        z = sigmoid(x @ wi["b"] + bi["b"] + h @ wh["b"] + bh["b"])
        n = np.tanh(x @ wi["c"] + bi["c"] + r * (h @ wh["c"] + bh["c"]))
        out = (1 - z) * n + z * h
        return (out,), out
    c = np.asarray(carry.c, np.float64)
    i = sigmoid(x @ wi["a"] + h @ wh["a"] + bi["a"])
    f = sigmoid(x @ wi["b"] + h @ wh["b"] + bi["b"])
    g = np.tanh(x @ wi["c"] + h @ wh["c"] + bi["c"])
    o = sigmoid(x @ wi["d"] + h @ wh["d"] + bi["d"])
    c = f * c + i * g
    out = o * np.tanh(c)
    return (out, c), out


def random_carry(cell, key, batch, hidden):
    carry = cell.initial_carry((batch,), hidden)
    keys = jax.random.split(key, len(carry))
    return type(carry)(*(jax.random.normal(k, c.shape) * 0.5 for k, c in zip(keys, carry)))


@pytest.mark.parametrize("name", CELL_NAMES)
def test_step_matches_numpy(name):
    cell = cells.get_cell(name)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = cell.init(k1, 5, 7)
    carry = random_carry(cell, k2, 3, 7)
    x = jax.random.normal(k3, (3, 5))
    new_carry, y = cells.step(cell, params, carry, x)
    ref_carry, ref_y = np_step(name, params, carry, np.asarray(x, np.float64))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-6)
    for got, want in zip(new_carry, ref_carry):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_saturated_gates_match_numpy(name):
    """Pre-activations of +-40 (where the cells' tanh-form sigmoid rounds to exactly 0 or 1)."""
    cell = cells.get_cell(name)
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    params = jax.tree.map(lambda w: w * 40.0, cell.init(k1, 5, 7))
    carry = random_carry(cell, k2, 3, 7)
    x = jnp.sign(jax.random.normal(k3, (3, 5)))
    new_carry, y = cells.step(cell, params, carry, x)
    ref_carry, ref_y = np_step(name, params, carry, np.asarray(x, np.float64))
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-6)
    for got, want in zip(new_carry, ref_carry):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_gradients_match_finite_differences(name):
    cell = cells.get_cell(name)
    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
        params = jax.tree.map(lambda a: a.astype(jnp.float64), cell.init(k1, 4, 3))
        carry = jax.tree.map(lambda a: a.astype(jnp.float64), random_carry(cell, k2, 2, 3))
        x = jax.random.normal(k3, (2, 4), jnp.float64)

        def f(params, carry, x):
            new_carry, y = cells.step(cell, params, carry, x)
            return jnp.sum(y * 1.3) + sum(jnp.sum(c) for c in new_carry)

        check_grads(f, (params, carry, x), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_lstm_forget_bias_raises_only_forget_gate():
    key = jax.random.key(0)
    base = cells.get_cell("lstm").init(key, 3, 4)
    biased = cells.lstm_with_forget_bias(1.0).init(key, 3, 4)
    diff = np.asarray(biased["bi"] - base["bi"])
    np.testing.assert_allclose(diff, [0] * 4 + [1] * 4 + [0] * 8, atol=1e-6)


def test_register_cell_and_unknown_name():
    name = "test_identity_rnn"
    cells.register_cell(name, cells.CELLS["rnn_tanh"]._replace(recur=lambda p, c, xp: (type(c)(xp), xp)))
    try:
        assert cells.get_cell(name) is cells.CELLS[name]
        with pytest.raises(ValueError, match="already registered"):
            cells.register_cell(name, cells.CELLS["gru"])
    finally:
        del cells.CELLS[name]
    with pytest.raises(ValueError, match="unknown cell 'lstmm'"):
        cells.get_cell("lstmm")


@pytest.mark.parametrize("name", CELL_NAMES + ["min_gru", "min_lstm"])
def test_init_and_carry_follow_dtype(name):
    cell = cells.get_cell(name)
    with jax.enable_x64(True):
        params = cell.init(jax.random.key(0), 4, 3, jnp.float64)
        carry = cell.initial_carry((2,), 3, jnp.float64)
        new_carry, y = cells.step(cell, params, carry, jnp.ones((2, 4), jnp.float64))
        assert {a.dtype for a in jax.tree.leaves((params, carry, new_carry, y))} == {jnp.dtype(jnp.float64)}
    assert {a.dtype for a in jax.tree.leaves(cell.init(jax.random.key(0), 4, 3))} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name,num_gates", [("rnn_tanh", 1), ("lstm", 4), ("gru", 3)])
def test_bias_has_pytorch_distribution(name, num_gates):
    """PyTorch draws b_ih and b_hh from U(-k, k), k = 1/sqrt(H). RNN and LSTM only use their
    sum, which rnnjax stores as `bi`: triangular on [-2k, 2k], std k*sqrt(2/3). The GRU keeps
    both, each with std k/sqrt(3)."""
    hidden = 200
    k = hidden**-0.5
    biases = jnp.concatenate([cells.get_cell(name).init(key, 3, hidden)["bi"]
                              for key in jax.random.split(jax.random.key(0), 50)])
    want_std, bound = (k / 3**0.5, k) if name == "gru" else (k * (2 / 3) ** 0.5, 2 * k)
    assert biases.shape == (50 * num_gates * hidden,)
    assert abs(float(biases.std()) / want_std - 1) < 0.03
    assert float(jnp.abs(biases).max()) <= bound
    assert float(jnp.abs(biases).max()) > 0.9 * bound
