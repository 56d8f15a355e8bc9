"""`model.impl = "cudnn"`: the LSTM stack through `jax.experimental.rnn` (cuDNN; MIOpen on ROCm).

The parameters stay rnnjax's LSTM pytree (`wi` [I, 4H], `wh` [H, 4H], `bi` [4H], gates i, f,
g, o): each step converts them into the flat vector `jax.experimental.rnn.lstm` reads
(`to_cudnn_weights`), so checkpoints, sampling and the other impls share the parameters and the
gradient flows back through the conversion. The flat layout (jax.experimental.rnn's docstring,
read back by its `unpack_lstm_weights`): W_ih [4H, I] then W_hh [4H, H] for every layer, then
b_ih [4H] then b_hh [4H] for every layer. cuDNN has two biases where rnnjax keeps their sum:
`bi` goes to b_ih and zeros to b_hh, so `from_cudnn_weights(to_cudnn_weights(p))` is `p` exactly.

What that API leaves out, and what rnnjax does:
- LSTM only, float32 only: other cells are refused when the config is validated, other dtypes
  when the stack is traced (`ConfigError`, before anything compiles).
- one hidden size per call: layers of different sizes run as separate calls.
- its dropout is never used: jaxlib's kernel sets cuDNN's dropout up with a fixed seed and no
  random-state buffer, and runs the forward in training mode for evaluation too. With dropout
  on, each layer is its own call and rnnjax's dropout (Zaremba or variational) sits between them,
  with the keys and masks of `recurrent.run_stack`, so "cudnn" trains the model "fast" trains.
- MIOpen orders the gates i, f, o, g: lowered for ROCm, the weights go through
  `jax.experimental.rnn.swap_lstm_gates`, as jax's own tests do.
- no per-example `lengths` and no bidirectional stacks (the language model uses neither).
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import rnn

from rnnjax import recurrent
from rnnjax.cells import LSTMCarry
from rnnjax.errors import ConfigError

Array = jax.Array


def check_backend() -> None:
    """Refuse a backend without cuDNN or MIOpen, when the model is built (before any compilation)."""
    backend = jax.default_backend()
    if backend != "gpu":
        raise ConfigError(f"model.impl 'cudnn' needs an NVIDIA (cuDNN) or AMD (MIOpen) GPU; this run's backend "
                          f"is {backend}")


def to_cudnn_weights(layer_params: Sequence[dict]) -> Array:
    """The flat weight vector of `jax.experimental.rnn.lstm` for a stack of rnnjax LSTM layers.

    The layers share one hidden size (what one cuDNN call runs); the first layer's input size is free.
    """
    hidden = layer_params[0]["wh"].shape[0]
    if any(p["wh"].shape[0] != hidden for p in layer_params):
        raise ValueError(f"one cuDNN call runs layers of one hidden size, got "
                         f"{[p['wh'].shape[0] for p in layer_params]}")
    matrices = [w.T.ravel() for p in layer_params for w in (p["wi"], p["wh"])]
    biases = [b for p in layer_params for b in (p["bi"], jnp.zeros_like(p["bi"]))]
    return jnp.concatenate(matrices + biases)


def from_cudnn_weights(weights: Array, input_size: int, hidden_size: int, num_layers: int) -> list[dict]:
    """rnnjax LSTM layer parameters from a flat `jax.experimental.rnn` weight vector (biases summed)."""
    w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, False)
    return [{"wi": w_ih[i].T, "wh": w_hh[i].T, "bi": b_ih[i] + b_hh[i]} for i in range(num_layers)]


def _for_platform(weights: Array, input_size: int, hidden_size: int, num_layers: int) -> Array:
    """The gate blocks in the order of the kernel the computation is lowered for (MIOpen: i, f, o, g)."""
    return jax.lax.platform_dependent(
        weights,
        rocm=lambda w: rnn.swap_lstm_gates(w, input_size, hidden_size, num_layers, False),
        default=lambda w: w,
    )


def _run_group(layer_params: Sequence[dict], carries: Sequence[LSTMCarry], xs: Array) -> tuple[list, Array]:
    """Layers of one hidden size as one `jax.experimental.rnn.lstm` call; time-major in and out."""
    input_size, hidden = layer_params[0]["wi"].shape[0], layer_params[0]["wh"].shape[0]
    num_layers = len(layer_params)
    weights = _for_platform(to_cudnn_weights(layer_params), input_size, hidden, num_layers)
    time, batch = xs.shape[:2]
    ys, h_n, c_n = rnn.lstm(
        jnp.swapaxes(xs, 0, 1),
        jnp.stack([c.h for c in carries]),
        jnp.stack([c.c for c in carries]),
        weights,
        seq_lengths=jnp.full((batch,), time, jnp.int32),
        input_size=input_size,
        hidden_size=hidden,
        num_layers=num_layers,
        dropout=0.0,
        bidirectional=False,
    )
    return [LSTMCarry(h_n[i], c_n[i]) for i in range(num_layers)], jnp.swapaxes(ys, 0, 1)


def _groups(sizes: Sequence[int], split_all: bool) -> list[list[int]]:
    """Layer indices per call: runs of equal hidden size, or one layer per call when `split_all`."""
    groups: list[list[int]] = []
    for i, h in enumerate(sizes):
        if groups and not split_all and sizes[groups[-1][-1]] == h:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _check_float32(params: Any, xs: Array) -> None:
    dtypes = {x.dtype for x in jax.tree.leaves(params)} | {xs.dtype}
    if dtypes != {jnp.dtype(jnp.float32)}:
        raise ConfigError(f"model.impl 'cudnn' runs float32 only (jax.experimental.rnn); this model has "
                          f"{', '.join(sorted(str(d) for d in dtypes))}")


def run_stack(
    params: Sequence[dict],
    carries: Sequence[LSTMCarry],
    xs: Array,
    *,
    dropout: float = 0.0,
    variational: bool = False,
    key: Array | None = None,
) -> tuple[list[LSTMCarry], Array]:
    """`recurrent.run_stack` for an LSTM stack, through cuDNN: `xs` [T, B, I] -> (carries, outputs [T, B, H]).

    Same dropout as `recurrent.run_stack` (on each layer's input and the top layer's output, the
    same keys); where it is on between layers, each layer is its own call.
    """
    _check_float32(params, xs)
    keys = [None] * (len(params) + 1) if key is None else list(jax.random.split(key, len(params) + 1))
    sizes = [p["wh"].shape[0] for p in params]
    new_carries: list[LSTMCarry] = []
    h = xs
    for group in _groups(sizes, split_all=key is not None and dropout > 0):
        h = recurrent.apply_dropout(keys[group[0]], dropout, h, variational)
        group_carries, h = _run_group([params[i] for i in group], [carries[i] for i in group], h)
        new_carries.extend(group_carries)
    return new_carries, recurrent.apply_dropout(keys[-1], dropout, h, variational)
