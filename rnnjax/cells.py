"""Recurrent cells as pure functions over pytrees, and the name -> cell table.

A cell is four pure functions (see `Cell`):

    params = cell.init(key, input_size, hidden_size, dtype)     # dtype: float32 by default
    carry  = cell.initial_carry(batch_shape, hidden_size, dtype)
    xp     = cell.input_proj(params, x)          # the part of the step that does not
    carry, y = cell.recur(params, carry, xp)     # depend on the carry, hoisted by `unroll`

and `step(cell, params, carry, x) == cell.recur(params, carry, cell.input_proj(params, x))`.
Splitting the input projection out lets `rnnjax.recurrent.unroll` compute it for all
time steps as one matmul before the scan. Carries are NamedTuples with an `h` field
(the output). Every matmul takes its operands in the weights' dtype and returns at least
float32 (`acc_dtype`), where the gates and the recurrence are computed: bfloat16 weights
(a bfloat16 model, or `model.compute_dtype = "bfloat16"`, which casts float32 parameters
for each step) multiply in bfloat16 and run a float32 recurrence, float64 parameters a
float64 one, so a float64 model is float64 end to end (carries from
`initial_carry(..., jnp.float64)`).

`min_gru` and `min_lstm` (Feng et al. 2024, "Were RNNs All We Needed?") gate only on the
input, so h' = a * h + b is linear in h: training runs their `parallel` form over the whole
sequence (`rnnjax.linear_scan`: an associative scan on accelerators, a sequential scan with a
hand-written VJP on CPU), and sampling steps `recur`, which computes the same h' = a * h + b.

Register a new cell with `register_cell(name, Cell(...))`; `get_cell(name)` looks it up. A
module that registers cells when imported can be named in a config (`model.cell_module`), so
`rnnjax train` from a shell, and every command or sweep point that reads the run's config,
imports it first (`import_cell_module`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.linear_scan import linear_scan

Params = Any
Array = jax.Array


class RNNCarry(NamedTuple):
    h: Array


class GRUCarry(NamedTuple):
    h: Array


class LSTMCarry(NamedTuple):
    h: Array
    c: Array


class Cell(NamedTuple):
    """A recurrent cell: pure functions and the number of gates it stacks in one matmul."""

    init: Callable[..., Params]  # (key, input_size, hidden_size, dtype=float32) -> params
    initial_carry: Callable[..., Any]  # (batch_shape, hidden_size, dtype=float32) -> carry
    input_proj: Callable[[Params, Array], Array]
    recur: Callable[[Params, Any, Array], tuple[Any, Array]]
    # Optional split of `recur` for `unroll(..., fast=True)`'s custom VJP:
    # recur(params, carry, xp) == core(carry, xp, hidden_proj(params, carry.h)), where
    # `hidden_proj` is linear in h (row-wise) and `core` has no parameters.
    hidden_proj: Callable[[Params, Array], Array] | None = None
    core: Callable[[Any, Array, Array], tuple[Any, Array]] | None = None
    # Optional whole-sequence form (carry, xp [T, B, G]) -> (carry, ys) equal to scanning
    # `recur`, for cells whose recurrence is linear in the carry (min_gru, min_lstm).
    parallel: Callable[[Params, Any, Array], tuple[Any, Array]] | None = None


def step(cell: Cell, params: Params, carry: Any, x: Array) -> tuple[Any, Array]:
    """One time step: `x` [..., input_size] -> (new carry, output [..., hidden])."""
    return cell.recur(params, carry, cell.input_proj(params, x))


def _uniform(key: Array, shape: tuple, scale: float, dtype) -> Array:
    return jax.random.uniform(key, shape, dtype, -scale, scale)


def _gated_init(num_gates: int, recurrent_bias: bool):
    """PyTorch's init: every weight and bias U(-1/sqrt(H), 1/sqrt(H)).

    Weights are stored as `wi` [input, G*H] and `wh` [hidden, G*H] so that all gates
    come out of one matmul; gate blocks follow PyTorch's order for the cell. PyTorch has
    two biases, b_ih and b_hh; where they only ever appear summed (RNN, LSTM) rnnjax
    stores the sum as `bi`, drawn as the sum of two such uniforms so that it has
    PyTorch's distribution (triangular on [-2k, 2k]). The GRU keeps `bh` apart, since
    b_hn sits inside the reset gate's product.
    """

    def init(key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        k = 1.0 / hidden_size**0.5
        kwi, kwh, kbi, kbh = jax.random.split(key, 4)
        gh = num_gates * hidden_size
        params = {
            "wi": _uniform(kwi, (input_size, gh), k, dtype),
            "wh": _uniform(kwh, (hidden_size, gh), k, dtype),
            "bi": _uniform(kbi, (gh,), k, dtype),
        }
        if recurrent_bias:
            params["bh"] = _uniform(kbh, (gh,), k, dtype)
        else:
            params["bi"] = params["bi"] + _uniform(kbh, (gh,), k, dtype)
        return params

    return init


def acc_dtype(dtype) -> jnp.dtype:
    """The dtype recurrences accumulate in: at least float32 (float64 stays float64)."""
    return jnp.promote_types(dtype, jnp.float32)


def _input_proj(params: Params, x: Array) -> Array:
    w = params["wi"]
    acc = acc_dtype(w.dtype)
    return (x.astype(w.dtype) @ w).astype(acc) + params["bi"].astype(acc)


def _recurrent_proj(params: Params, h: Array) -> Array:
    w = params["wh"]
    return (h.astype(w.dtype) @ w).astype(acc_dtype(h.dtype))


def _zeros_carry(carry_type, num_states: int):
    def initial_carry(batch_shape: tuple, hidden_size: int, dtype=jnp.float32):
        return carry_type(*(jnp.zeros((*batch_shape, hidden_size), dtype) for _ in range(num_states)))

    return initial_carry


def _composed(hidden_proj, core):
    """`recur` from its split: the carry's matmul, then the parameter-free rest."""

    def recur(params: Params, carry: Any, xp: Array) -> tuple[Any, Array]:
        return core(carry, xp, hidden_proj(params, carry.h))

    return recur


def _rnn_core(activation):
    def core(carry: RNNCarry, xp: Array, hp: Array) -> tuple[RNNCarry, Array]:
        """h' = act(W_ih x + b_ih + W_hh h), with xp = W_ih x + b_ih and hp = W_hh h."""
        h = activation(xp + hp)
        return RNNCarry(h), h

    return core


def _gru_hidden_proj(params: Params, h: Array) -> Array:
    return _recurrent_proj(params, h) + params["bh"].astype(acc_dtype(h.dtype))


def _gru_core(carry: GRUCarry, xp: Array, hp: Array) -> tuple[GRUCarry, Array]:
    """GRU, cuDNN/PyTorch convention, gate blocks in order (r, z, n):

        r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))     # reset after the matmul
        h' = (1 - z) * n + z * h
    """
    two = 2 * (xp.shape[-1] // 3)
    # r and z as one dense tanh, sigmoid(x) = (1 + tanh(x / 2)) / 2 (faster on XLA CPU: levers.md)
    r, z = jnp.split(0.5 * jnp.tanh(0.5 * (xp[..., :two] + hp[..., :two])) + 0.5, 2, axis=-1)
    n = jnp.tanh(xp[..., two:] + r * hp[..., two:])
    h = (1.0 - z) * n + z * carry.h
    return GRUCarry(h), h


def _lstm_core(carry: LSTMCarry, xp: Array, hp: Array) -> tuple[LSTMCarry, Array]:
    """LSTM, gate blocks in PyTorch's order (i, f, g, o):

        i = sigmoid(W_ii x + W_hi h + b_i)
        f = sigmoid(W_if x + W_hf h + b_f)     # b_f includes the optional forget bias
        g = tanh(W_ig x + W_hg h + b_g)
        o = sigmoid(W_io x + W_ho h + b_o)
        c' = f * c + i * g
        h' = o * tanh(c')
    """
    gates = xp + hp
    hidden = gates.shape[-1] // 4
    # One dense tanh over all 4H columns, sigmoid(x) = (1 + tanh(x / 2)) / 2 for i, f, o:
    # XLA CPU vectorises it about 4x faster than four activations over slices (levers.md).
    scale = np.repeat(np.array([0.5, 0.5, 1.0, 0.5], np.float32), hidden).astype(gates.dtype)
    i, f, g, o = jnp.split(jnp.tanh(gates * scale), 4, axis=-1)
    c = (0.5 * f + 0.5) * carry.c + (0.5 * i + 0.5) * g
    h = (0.5 * o + 0.5) * jnp.tanh(c)
    return LSTMCarry(h, c), h


def _input_gated_init(num_gates: int):
    """Input weights only, `wi` [input, G*H] and `bi` [G*H], U(-1/sqrt(H), 1/sqrt(H))."""

    def init(key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        k = 1.0 / hidden_size**0.5
        kw, kb = jax.random.split(key)
        return {"wi": _uniform(kw, (input_size, num_gates * hidden_size), k, dtype),
                "bi": _uniform(kb, (num_gates * hidden_size,), k, dtype)}

    return init


def _min_gru_coeffs(xp: Array) -> tuple[Array, Array]:
    """minGRU: z = sigmoid(W_z x + b_z), h~ = W_h x + b_h; h' = (1 - z) * h + z * h~."""
    z_pre, h_tilde = jnp.split(xp, 2, axis=-1)
    z = jax.nn.sigmoid(z_pre)
    return 1.0 - z, z * h_tilde


def _min_lstm_coeffs(xp: Array) -> tuple[Array, Array]:
    """minLSTM: f, i = sigmoid(W x + b), normalised f' = f / (f + i), i' = i / (f + i);
    h~ = W_h x + b_h; h' = f' * h + i' * h~ (gate blocks in order f, i, h~).

    f' is computed as sigmoid(log f - log i) and i' as sigmoid(log i - log f): the same values,
    but finite, with finite gradients, where both gates underflow (f + i -> 0 made f / (f + i)
    0 / 0, and its gradient inf - inf, once both pre-activations fell below about -44).
    """
    f_pre, i_pre, h_tilde = jnp.split(xp, 3, axis=-1)
    d = jax.nn.log_sigmoid(f_pre) - jax.nn.log_sigmoid(i_pre)
    return jax.nn.sigmoid(d), jax.nn.sigmoid(-d) * h_tilde


def _linear_recurrence(coeffs):
    """`recur` and `parallel` for h' = a * h + b with (a, b) = coeffs(xp); `parallel` runs
    `linear_scan` (associative on accelerators, sequential on CPU), equal to stepping `recur`
    up to float rounding of the order."""

    def recur(params: Params, carry: RNNCarry, xp: Array) -> tuple[RNNCarry, Array]:
        a, b = coeffs(xp)
        h = a * carry.h + b
        return RNNCarry(h), h

    def parallel(params: Params, carry: RNNCarry, xp: Array) -> tuple[RNNCarry, Array]:
        hs = linear_scan(*coeffs(xp), carry.h)
        return RNNCarry(hs[-1]), hs

    return recur, parallel


def _min_cell(num_gates: int, coeffs) -> Cell:
    recur, parallel = _linear_recurrence(coeffs)
    return Cell(_input_gated_init(num_gates), _zeros_carry(RNNCarry, 1), _input_proj, recur, parallel=parallel)


def _split_cell(init, initial_carry, hidden_proj, core) -> Cell:
    return Cell(init, initial_carry, _input_proj, _composed(hidden_proj, core), hidden_proj, core)


def lstm_with_forget_bias(forget_bias: float) -> Cell:
    """An LSTM whose initial forget-gate bias is raised by `forget_bias`."""

    base = _gated_init(4, recurrent_bias=False)

    def init(key: Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> Params:
        params = base(key, input_size, hidden_size, dtype)
        params["bi"] = params["bi"].at[hidden_size : 2 * hidden_size].add(forget_bias)
        return params

    return CELLS["lstm"]._replace(init=init)


CELLS: dict[str, Cell] = {
    "rnn_tanh": _split_cell(_gated_init(1, False), _zeros_carry(RNNCarry, 1), _recurrent_proj, _rnn_core(jnp.tanh)),
    "rnn_relu": _split_cell(_gated_init(1, False), _zeros_carry(RNNCarry, 1), _recurrent_proj,
                            _rnn_core(jax.nn.relu)),
    "gru": _split_cell(_gated_init(3, True), _zeros_carry(GRUCarry, 1), _gru_hidden_proj, _gru_core),
    "lstm": _split_cell(_gated_init(4, False), _zeros_carry(LSTMCarry, 2), _recurrent_proj, _lstm_core),
    "min_gru": _min_cell(2, _min_gru_coeffs),
    "min_lstm": _min_cell(3, _min_lstm_coeffs),
}


def register_cell(name: str, cell: Cell) -> None:
    """Add a cell under `name` so configs can select it as `model.cell=name`."""
    if name in CELLS:
        raise ValueError(f"cell {name!r} is already registered")
    CELLS[name] = cell


def import_cell_module(spec: str) -> None:
    """Import the module `spec` names, a dotted module name or a `.py` file, so its cells register.

    A file already imported (the script being run, or an earlier call) is not imported again,
    so its `register_cell` calls run once. Raises what importing raises (ImportError, ...).
    """
    if not spec.endswith(".py"):
        importlib.import_module(spec)
        return
    path = Path(spec).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {spec}")
    loaded = {Path(f).resolve() for m in list(sys.modules.values()) if isinstance(f := getattr(m, "__file__", None), str)}
    if path in loaded:
        return
    name = f"rnnjax_user_cells_{abs(hash(str(path)))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; expected one of {sorted(CELLS)}") from None
