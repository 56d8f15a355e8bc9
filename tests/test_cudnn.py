"""`model.impl = "cudnn"` (rnnjax.cudnn): the weight conversion, the reference its kernel must match,
the refusals. Without a GPU `jax.experimental.rnn.lstm` has no kernel, so the stack and the LM run
with `jax.experimental.rnn.lstm_ref` (what jax tests the kernel against) standing in for it (the
`kernel` fixture); on a GPU the same tests run cuDNN or MIOpen itself, at float32 matmul precision.

    pytest tests/test_cudnn.py      # on a GPU machine: the kernel against rnnjax's LSTM
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn

from rnnjax import cells, cli, cudnn, recurrent
from rnnjax import config as config_lib
from rnnjax.errors import ConfigError
from rnnjax.model import make_lm, param_count

LSTM = cells.CELLS["lstm"]
ON_GPU = jax.default_backend() == "gpu"
# cuDNN and XLA sum in different orders: kernel against rnnjax, looser on a GPU
VALUE_TOL, GRAD_TOL = (1e-4, 1e-3) if ON_GPU else (2e-6, 2e-5)


def stack(input_size: int, sizes: list[int], batch: int = 3, time: int = 6, dtype=jnp.float32):
    """Parameters (forget bias 1), non-zero initial carries and inputs [T, B, I]."""
    k_p, k_c, k_x = jax.random.split(jax.random.key(0), 3)
    params = recurrent.init_stack(cells.lstm_with_forget_bias(1.0), k_p, input_size, sizes, dtype=dtype)
    carries = [LSTM.initial_carry((batch,), h, dtype) for h in sizes]
    leaves, tree = jax.tree.flatten(carries)
    carries = jax.tree.unflatten(tree, [jax.random.normal(k, x.shape, dtype)
                                        for k, x in zip(jax.random.split(k_c, len(leaves)), leaves)])
    return params, carries, jax.random.normal(k_x, (time, batch, input_size), dtype)


def lstm_ref_stack(params, carries, xs):
    """jax's reference LSTM on the converted weights, in rnnjax's shapes: (carries, outputs [T, B, H])."""
    i, h, n = params[0]["wi"].shape[0], params[0]["wh"].shape[0], len(params)
    parts = rnn.unpack_lstm_weights(cudnn.to_cudnn_weights(params), i, h, n, False)
    ys, h_n, c_n = rnn.lstm_ref(jnp.swapaxes(xs, 0, 1), jnp.stack([c.h for c in carries]),
                                jnp.stack([c.c for c in carries]), *parts,
                                jnp.full((xs.shape[1],), xs.shape[0], jnp.int32), i, h, n, 0.0, False)
    return [cells.LSTMCarry(h_n[k], c_n[k]) for k in range(n)], jnp.swapaxes(ys, 0, 1)


def reference_kernel(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, num_layers, dropout,
                     bidirectional):
    """`rnn.lstm`'s signature computed by `rnn.lstm_ref`: the kernel's stand-in on CPU."""
    parts = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return rnn.lstm_ref(x, h_0, c_0, *parts, seq_lengths, input_size, hidden_size, num_layers, dropout,
                        bidirectional)


@pytest.fixture(autouse=True)
def _full_float32():
    """No TF32 on a GPU, in cuDNN or in XLA's matmuls (on CPU float32 matmuls are full already)."""
    with jax.default_matmul_precision("float32"):
        yield


@pytest.fixture
def kernel(monkeypatch):
    """The LSTM kernel `rnnjax.cudnn` calls: the GPU's, or without one `lstm_ref` (and no backend check)."""
    if not ON_GPU:
        monkeypatch.setattr(rnn, "lstm", reference_kernel)
        monkeypatch.setattr(cudnn, "check_backend", lambda: None)


def loss(outputs, seed: int = 5):
    """A scalar of every carry and output with random weights, so gradients see them all."""
    leaves = jax.tree.leaves(outputs)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return sum(jnp.sum(x * jax.random.normal(k, x.shape, x.dtype)) for k, x in zip(keys, leaves))


def outputs_and_grads(f, params):
    """`f(params)` and the gradient of `loss(f(params))`."""
    return f(params), jax.grad(lambda p: loss(f(p)))(params)


def assert_close(a, b, tol: float):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


@pytest.mark.parametrize("input_size, sizes", [(5, [3]), (7, [4, 4])])
def test_round_trip_is_exact(input_size, sizes):
    params, _, _ = stack(input_size, sizes)
    flat = cudnn.to_cudnn_weights(params)
    assert flat.shape == (rnn.get_num_params_in_lstm(input_size, sizes[0], len(sizes), False),)
    assert not np.any(rnn.unpack_lstm_weights(flat, input_size, sizes[0], len(sizes), False)[3][0])  # b_hh: 0
    back = cudnn.from_cudnn_weights(flat, input_size, sizes[0], len(sizes))
    assert jax.tree.structure(back) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, back, params)


def test_layers_of_different_sizes_are_not_one_call():
    params, _, _ = stack(5, [4, 3])
    with pytest.raises(ValueError, match=r"one hidden size, got \[4, 3\]"):
        cudnn.to_cudnn_weights(params)


@pytest.mark.parametrize("input_size, sizes", [(5, [3]), (7, [4, 4])])
def test_lstm_ref_on_converted_weights_is_rnnjax_lstm(input_size, sizes):
    params, carries, xs = stack(input_size, sizes)
    assert_close(lstm_ref_stack(params, carries, xs), recurrent.run_stack(LSTM, params, carries, xs),
                 VALUE_TOL)
    with jax.enable_x64(True):
        params, carries, xs = stack(input_size, sizes, dtype=jnp.float64)
        assert_close(lstm_ref_stack(params, carries, xs), recurrent.run_stack(LSTM, params, carries, xs), 1e-13)


@pytest.mark.usefixtures("kernel")
def test_stack_equals_fast():
    params, carries, xs = stack(5, [4, 4, 3])
    # Without dropout the two 4-wide layers are one call; with it each layer is one, between rnnjax's masks.
    # The gradients are lstm_ref's through the weight conversion, against rnnjax's.
    for key in (None, jax.random.key(3)):
        got, got_grads = outputs_and_grads(partial(cudnn.run_stack, carries=carries, xs=xs, dropout=0.4, key=key),
                                           params)
        want, want_grads = outputs_and_grads(partial(recurrent.run_stack, LSTM, carries=carries, xs=xs, dropout=0.4,
                                                     key=key, fast=True), params)
        assert_close(got, want, VALUE_TOL)
        assert_close(got_grads, want_grads, GRAD_TOL)


@pytest.mark.usefixtures("kernel")
def test_lm_equals_fast():
    overrides = {"model.num_layers": "2", "model.hidden_size": "8", "model.dropout": "0.3"}
    lms = {impl: make_lm(config_lib.resolve("quickstart", {**overrides, "model.impl": impl}), 11)
           for impl in ("cudnn", "fast")}
    params = lms["fast"].init(jax.random.key(1))
    tokens = jax.random.randint(jax.random.key(2), (3, 7), 0, 11)

    def nll(p, impl):
        return lms[impl].nll(p, lms[impl].initial_carry(3), tokens, (tokens + 1) % 11, jax.random.key(4))

    got, got_grads = outputs_and_grads(partial(nll, impl="cudnn"), params)
    want, want_grads = outputs_and_grads(partial(nll, impl="fast"), params)
    assert_close(got, want, VALUE_TOL)
    assert_close(got_grads, want_grads, GRAD_TOL)


def test_config_refusals():
    assert config_lib.resolve("quickstart", {"model.impl": "cudnn"}).model.impl == "cudnn"
    with pytest.raises(ConfigError, match=r"'model.impl' = 'cudnn': expected 'fast' or 'reference' with "
                                          r"model.cell = 'gru' \(cudnn runs LSTMs only\)"):
        config_lib.resolve("quickstart", {"model.impl": "cudnn", "model.cell": "gru"})
    with pytest.raises(ConfigError, match=r"with task = 'sine' \(cudnn runs the language model of tasks lm"):
        config_lib.resolve("quickstart", {"model.impl": "cudnn", "task": "sine"})
    params, carries, xs = stack(5, [4])
    to_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    with pytest.raises(ConfigError, match=r"^model.impl 'cudnn' runs float32 only \(jax.experimental.rnn\); "
                                          r"this model has bfloat16, float32$"):
        cudnn.run_stack(to_bf16, carries, xs)


@pytest.mark.skipif(ON_GPU, reason="the refusal of a backend without cuDNN or MIOpen")
def test_train_on_cpu_is_one_line_error(tmp_path, capsys):
    config = config_lib.resolve("quickstart", {"model.impl": "cudnn"})
    assert param_count(config, 24) > 0  # counting parameters needs no GPU (a sweep's planner)
    workdir = tmp_path / "run"
    assert cli.main(["train", "--workdir", str(workdir), "--config.model.impl=cudnn"]) == 2
    err = capsys.readouterr().err
    assert err == ("rnnjax: error: model.impl 'cudnn' needs an NVIDIA (cuDNN) or AMD (MIOpen) GPU; this run's "
                   "backend is cpu\n")
    assert not workdir.exists()
