"""The Flax modules: the pure functions' values, Flax's own RNN conventions, NNX training."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.linen.recurrent import flip_sequences as flax_flip_sequences

from rnnjax import cells, recurrent
from rnnjax.flax_layers import RNN, NNXRNN

B, T, F = 3, 7, 4
LENGTHS = jnp.array([7, 4, 1])


def inputs(seed=0):
    return jax.random.normal(jax.random.key(seed), (B, T, F))


class PureCell(nn.RNNCellBase):
    """An rnnjax cell with fixed parameters as a Flax cell, so `nn.RNN` supplies the reference
    for time_major, seq_lengths, reverse, keep_order and return_carry."""

    cell: str
    params: dict
    hidden: int

    def __call__(self, carry, x):
        return cells.step(cells.get_cell(self.cell), self.params, carry, x)

    def initialize_carry(self, rng, input_shape):
        return cells.get_cell(self.cell).initial_carry(input_shape[:-1], self.hidden)

    @property
    def num_feature_axes(self) -> int:
        return 1


def one_layer(cell_name, **kw):
    module = RNN(cell=cell_name, hidden_sizes=(5,), return_carry=True, **kw)
    variables = module.init(jax.random.key(1), inputs())
    return module, variables, variables["params"]["layers"][0]


def test_linen_module_equals_pure_stack():
    xs = inputs()
    module = RNN(cell="lstm", hidden_sizes=(5, 3), dropout=0.3, return_carry=True)
    variables = module.init(jax.random.key(1), xs)
    carries, ys = module.apply(variables, xs)
    cell = cells.get_cell("lstm")
    params = variables["params"]["layers"]
    assert jax.tree.structure(params) == jax.tree.structure(recurrent.init_stack(cell, jax.random.key(0), F, (5, 3)))
    want_c, want_y = recurrent.run_stack(cell, params, recurrent.stack_initial_carry(cell, B, (5, 3)),
                                         jnp.swapaxes(xs, 0, 1))
    np.testing.assert_array_equal(ys, jnp.swapaxes(want_y, 0, 1))
    jax.tree.map(np.testing.assert_array_equal, carries, want_c)

    _, d1 = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(9)})
    _, d2 = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(9)})
    np.testing.assert_array_equal(d1, d2)
    assert not np.array_equal(d1, ys)


def test_batch_major_is_the_default_and_time_major_transposes():
    xs = inputs()
    module, variables, _ = one_layer("gru")
    carry, ys = module.apply(variables, xs)
    assert ys.shape == (B, T, 5)
    carry_t, ys_t = RNN(cell="gru", hidden_sizes=(5,), return_carry=True, time_major=True).apply(
        variables, jnp.swapaxes(xs, 0, 1))
    np.testing.assert_array_equal(ys_t, jnp.swapaxes(ys, 0, 1))
    jax.tree.map(np.testing.assert_array_equal, carry_t, carry)
    assert RNN(cell="gru", hidden_sizes=(5,)).apply(variables, xs).shape == (B, T, 5)  # outputs only


@pytest.mark.parametrize("reverse,keep_order", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("cell_name", ["rnn_tanh", "gru", "lstm", "min_gru"])
def test_matches_flax_rnn_conventions(cell_name, reverse, keep_order):
    """Same cell, same parameters, run by `flax.linen.RNN` and by rnnjax's module: equal final
    carries and equal outputs at every real step; rnnjax's padded outputs are 0."""
    xs = inputs(2)
    module, variables, params = one_layer(cell_name, reverse=reverse, keep_order=keep_order)
    carry, ys = module.apply(variables, xs, seq_lengths=LENGTHS)
    flax_rnn = nn.RNN(PureCell(cell_name, params, 5), reverse=reverse, keep_order=keep_order, return_carry=True)
    want_carry, want_ys = flax_rnn.apply({}, xs, seq_lengths=LENGTHS)
    real = (jnp.arange(T)[None, :] < LENGTHS[:, None])[..., None]
    np.testing.assert_allclose(jnp.where(real, ys, 0), jnp.where(real, want_ys, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(jnp.where(real, 0, ys), 0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), carry[0], want_carry)


def test_bidirectional_matches_flax_bidirectional():
    xs = inputs(3)
    module = RNN(cell="lstm", hidden_sizes=(5,), bidirectional=True, return_carry=True)
    variables = module.init(jax.random.key(1), xs)
    (fwd_bwd,), ys = module.apply(variables, xs, seq_lengths=LENGTHS)
    p_fwd, p_bwd = variables["params"]["layers"][0]
    flax_bi = nn.Bidirectional(nn.RNN(PureCell("lstm", p_fwd, 5)), nn.RNN(PureCell("lstm", p_bwd, 5)),
                               return_carry=True)
    want_carry, want_ys = flax_bi.apply({}, xs, seq_lengths=LENGTHS)
    real = (jnp.arange(T)[None, :] < LENGTHS[:, None])[..., None]
    assert ys.shape == (B, T, 10)
    np.testing.assert_allclose(jnp.where(real, ys, 0), jnp.where(real, want_ys, 0), rtol=1e-6, atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), fwd_bwd, want_carry)
    with pytest.raises(ValueError, match="bidirectional"):
        RNN(cell="lstm", hidden_sizes=(5,), bidirectional=True, reverse=True).init(jax.random.key(1), xs)


@pytest.mark.parametrize("time_major", [False, True])
def test_flip_sequences_equals_flax(time_major):
    xs = jax.random.normal(jax.random.key(4), (T, B, 2))
    want = flax_flip_sequences(xs if time_major else jnp.swapaxes(xs, 0, 1), LENGTHS, num_batch_dims=1,
                               time_major=time_major)
    got = recurrent.flip_sequences(xs, LENGTHS)
    real = (jnp.arange(T)[:, None] < LENGTHS[None, :])[..., None]  # Flax's padding is not ours to match
    np.testing.assert_array_equal(jnp.where(real, got, 0), jnp.where(real, want if time_major else
                                                                     jnp.swapaxes(want, 0, 1), 0))
    np.testing.assert_array_equal(jnp.where(real, 0, got), jnp.where(real, 0, xs))  # padding stays in place
    np.testing.assert_array_equal(recurrent.flip_sequences(xs, None), xs[::-1])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_nnx_module_equals_linen_and_pure_stack(bidirectional):
    xs = inputs(5)
    model = NNXRNN("gru", F, (5, 3), rngs=nnx.Rngs(0), return_carry=True, bidirectional=bidirectional)
    carry, ys = model(xs, seq_lengths=LENGTHS)
    linen = RNN(cell="gru", hidden_sizes=(5, 3), return_carry=True, bidirectional=bidirectional)
    want_carry, want_ys = linen.apply({"params": {"layers": model.params}}, xs, seq_lengths=LENGTHS)
    np.testing.assert_array_equal(ys, want_ys)
    jax.tree.map(np.testing.assert_array_equal, carry, want_carry)
    cell = cells.get_cell("gru")
    assert jax.tree.structure(model.params) == jax.tree.structure(
        recurrent.init_stack(cell, jax.random.key(0), F, (5, 3), bidirectional))
    _, pure = recurrent.run_stack(cell, model.params, recurrent.stack_initial_carry(cell, B, (5, 3), bidirectional),
                                  jnp.swapaxes(xs, 0, 1), lengths=LENGTHS, bidirectional=bidirectional)
    np.testing.assert_array_equal(ys, jnp.swapaxes(pure, 0, 1))


def test_nnx_module_trains_under_nnx_jit_with_optimizer_and_dropout_follows_train_eval():
    """Echo the input two steps late: loss falls under nnx.jit + nnx.Optimizer, and
    model.eval() switches dropout off (same outputs as dropout 0), model.train() on."""
    xs = jax.random.normal(jax.random.key(6), (8, 12, 1))
    target = jnp.pad(xs, ((0, 0), (2, 0), (0, 0)))[:, :12]

    class Echo(nnx.Module):
        def __init__(self, rngs):
            self.rnn = NNXRNN("lstm", 1, (16,), rngs=rngs, dropout=0.1)
            self.out = nnx.Linear(16, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(self.rnn(x))

    model = Echo(nnx.Rngs(params=0, dropout=1))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs) - target) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(train_step(model, optimizer)) for _ in range(150)]
    assert losses[-1] < 0.2 * losses[0]

    model.eval()
    np.testing.assert_array_equal(model.rnn(xs), model.rnn(xs, deterministic=True))
    np.testing.assert_array_equal(model.rnn(xs), RNN(cell="lstm", hidden_sizes=(16,)).apply(
        {"params": {"layers": model.rnn.params}}, xs))
    model.train()
    assert not np.array_equal(model.rnn(xs), model.rnn(xs, deterministic=True))


def test_float64_modules():
    with jax.enable_x64(True):
        xs = inputs().astype(jnp.float64)
        model = NNXRNN("lstm", F, (5,), rngs=nnx.Rngs(0), param_dtype=jnp.float64)
        linen = RNN(cell="lstm", hidden_sizes=(5,), param_dtype=jnp.float64)
        variables = linen.init(jax.random.key(0), xs)
        assert model(xs).dtype == jnp.float64 and linen.apply(variables, xs).dtype == jnp.float64
