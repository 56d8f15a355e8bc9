"""unroll / stacks: scan equals the Python loop, halves equal the whole, masking, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import cells, recurrent

CELL_NAMES = ["rnn_tanh", "rnn_relu", "gru", "lstm"]
T, B, I, H = 9, 3, 4, 5


def setup(name, seed=0):
    cell = cells.get_cell(name)
    k1, k2 = jax.random.split(jax.random.key(seed))
    return cell, cell.init(k1, I, H), cell.initial_carry((B,), H), jax.random.normal(k2, (T, B, I))


def python_loop(cell, params, carry, xs, reverse=False):
    ys = [None] * xs.shape[0]
    order = range(xs.shape[0] - 1, -1, -1) if reverse else range(xs.shape[0])
    for t in order:
        carry, ys[t] = cells.step(cell, params, carry, xs[t])
    return carry, jnp.stack(ys)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_scan_equals_python_loop(name, reverse):
    cell, params, carry, xs = setup(name)
    got_c, got_y = recurrent.unroll(cell, params, carry, xs, reverse=reverse)
    want_c, want_y = python_loop(cell, params, carry, xs, reverse=reverse)
    np.testing.assert_allclose(got_y, want_y, rtol=1e-5, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got_c, want_c)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_two_halves_with_carry_equal_whole(name):
    cell, params, carry, xs = setup(name)
    c_all, y_all = recurrent.unroll(cell, params, carry, xs)
    c1, y1 = recurrent.unroll(cell, params, carry, xs[:4])
    c2, y2 = recurrent.unroll(cell, params, c1, xs[4:])
    np.testing.assert_allclose(jnp.concatenate([y1, y2]), y_all, rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), c2, c_all)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_padded_steps_are_inert(name, reverse):
    """Each padded example gives the carry and outputs of its unpadded sequence alone."""
    cell, params, carry, xs = setup(name)
    lengths = jnp.array([9, 4, 1])
    noise = jax.random.normal(jax.random.key(5), xs.shape) * 100  # garbage in the padding
    pad = jnp.arange(T)[:, None, None] >= lengths[None, :, None]
    xs_padded = jnp.where(pad, noise, xs)
    got_c, got_y = recurrent.unroll(cell, params, carry, xs_padded, lengths=lengths, reverse=reverse)
    for b, n in enumerate(lengths.tolist()):
        one = jax.tree.map(lambda a: a[b:b + 1], carry)
        want_c, want_y = recurrent.unroll(cell, params, one, xs[:n, b:b + 1], reverse=reverse)
        np.testing.assert_allclose(got_y[:n, b:b + 1], want_y, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_y[n:, b], 0.0)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g[b:b + 1], w, rtol=1e-5, atol=1e-6), got_c, want_c)


def test_stack_with_different_layer_sizes_and_bidirectional():
    cell = cells.get_cell("gru")
    sizes = [6, 3]
    params = recurrent.init_stack(cell, jax.random.key(0), I, sizes)
    carries = recurrent.stack_initial_carry(cell, B, sizes)
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    out_c, ys = recurrent.run_stack(cell, params, carries, xs)
    assert ys.shape == (T, B, 3) and [c.h.shape for c in out_c] == [(B, 6), (B, 3)]
    _, h1 = recurrent.unroll(cell, params[0], carries[0], xs)
    _, h2 = recurrent.unroll(cell, params[1], carries[1], h1)
    np.testing.assert_allclose(ys, h2, rtol=1e-6)

    bi_params = (params[0], cell.init(jax.random.key(2), I, 6))
    (_, _), y_bi = recurrent.run_bidirectional(cell, bi_params, (carries[0], carries[0]), xs)
    _, y_rev = recurrent.unroll(cell, bi_params[1], carries[0], xs, reverse=True)
    np.testing.assert_allclose(y_bi, jnp.concatenate([h1, y_rev], -1), rtol=1e-6)


@pytest.mark.parametrize("name", CELL_NAMES)
def test_bidirectional_stack_is_forward_and_time_flipped_stacks_layer_by_layer(name):
    """Layer 1's reverse half equals a forward unroll of the time-flipped input; layer 2 reads both halves."""
    cell = cells.get_cell(name)
    sizes = [6, 3]
    params = recurrent.init_stack(cell, jax.random.key(0), I, sizes, bidirectional=True)
    carries = recurrent.stack_initial_carry(cell, B, sizes, bidirectional=True)
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    out_c, ys = recurrent.run_stack(cell, params, carries, xs, bidirectional=True)
    assert ys.shape == (T, B, 6) and [(f.h.shape, b.h.shape) for f, b in out_c] == [((B, 6), (B, 6)), ((B, 3), (B, 3))]
    h = xs
    for (p_fwd, p_bwd), (c_fwd, c_bwd) in zip(params, carries):
        f_c, f_y = recurrent.unroll(cell, p_fwd, c_fwd, h)
        b_c, b_y = recurrent.unroll(cell, p_bwd, c_bwd, h[::-1])
        h = jnp.concatenate([f_y, b_y[::-1]], -1)
    np.testing.assert_allclose(ys, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out_c[-1][1].h, b_c.h, rtol=1e-5, atol=1e-6)


def test_dropout_off_without_key_and_deterministic_with_key():
    cell, params, carry, xs = setup("lstm")
    stack = [params, cell.init(jax.random.key(3), H, H)]
    carries = [carry, carry]
    _, plain = recurrent.run_stack(cell, stack, carries, xs, dropout=0.5)
    _, no_rate = recurrent.run_stack(cell, stack, carries, xs, dropout=0.0, key=jax.random.key(0))
    np.testing.assert_array_equal(plain, no_rate)
    _, d1 = recurrent.run_stack(cell, stack, carries, xs, dropout=0.5, key=jax.random.key(7))
    _, d2 = recurrent.run_stack(cell, stack, carries, xs, dropout=0.5, key=jax.random.key(7))
    _, d3 = recurrent.run_stack(cell, stack, carries, xs, dropout=0.5, key=jax.random.key(8))
    np.testing.assert_array_equal(d1, d2)
    assert not np.array_equal(d1, d3) and not np.array_equal(d1, plain)


def test_variational_mask_shared_over_time():
    x = jnp.ones((T, B, 50))
    y = recurrent.apply_dropout(jax.random.key(0), 0.5, x, variational=True)
    np.testing.assert_array_equal(y, jnp.broadcast_to(y[:1], y.shape))
    z = recurrent.apply_dropout(jax.random.key(0), 0.5, x, variational=False)
    assert not np.array_equal(z, jnp.broadcast_to(z[:1], z.shape))
    assert set(np.unique(np.asarray(y))) <= {0.0, 2.0}


@pytest.mark.parametrize("name", CELL_NAMES + ["min_gru", "min_lstm"])
def test_float64_stack_stays_float64(name):
    """float64 params and carries give a float64 recurrence, equal to the Python loop to round-off."""
    cell = cells.get_cell(name)
    with jax.enable_x64(True):
        params = recurrent.init_stack(cell, jax.random.key(0), I, (H, 3), dtype=jnp.float64)
        carries = recurrent.stack_initial_carry(cell, B, (H, 3), dtype=jnp.float64)
        xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
        got_c, got_y = recurrent.run_stack(cell, params, carries, xs, fast=True)
        want_y = xs
        for p, c in zip(params, carries):
            _, want_y = python_loop(cell, p, c, want_y)
        assert {a.dtype for a in jax.tree.leaves((got_c, got_y))} == {jnp.dtype(jnp.float64)}
        np.testing.assert_allclose(got_y, want_y, rtol=1e-12, atol=1e-13)
