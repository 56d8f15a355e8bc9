"""Flax modules over the same pure cells: `RNN` (linen) and `NNXRNN` (NNX), Flax's conventions.

Both hold exactly the pytree `recurrent.init_stack` returns and run it with
`recurrent.run_stack`; there is no second implementation.

    rnn = RNN(cell="lstm", hidden_sizes=(200, 200))
    variables = rnn.init(key, inputs)                   # inputs [B, T, F], batch-major
    outputs = rnn.apply(variables, inputs)              # [B, T, 200]
    # variables["params"]["layers"] is the list rnnjax.recurrent.init_stack returns.

    rnn = NNXRNN("lstm", input_size=F, hidden_sizes=(200, 200), rngs=nnx.Rngs(0))
    outputs = rnn(inputs)                               # rnn.params: the same list

Conventions follow `flax.linen.RNN` / `flax.nnx.RNN`: `time_major=False` (inputs
[B, T, F]), `seq_lengths` [B], `reverse` with `keep_order`, `return_carry` (then the
result is `(carry, outputs)`; the carry is one per layer, the final state of each example's
last real step). Three differences, on purpose: a module is a stack of layers (its carry is
a list, as `run_stack` takes it); `bidirectional=True` runs every layer both ways and
concatenates ([.., 2H], PyTorch's stacking, where Flax's `Bidirectional` wraps one layer);
outputs at padded steps are 0 (Flax leaves whatever the cell computed), and each layer's
input projection is one matmul over all steps, outside the scan.

Dropout (Zaremba-style, or `variational=True`) is on the non-recurrent connections when
not deterministic: linen takes `deterministic=False` and a `dropout` PRNG stream in `apply`;
NNX follows `model.train()` / `model.eval()` and draws from its `rngs.dropout` stream.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from rnnjax import cells, recurrent


def run_flax_convention(cell: cells.Cell, params: list, inputs: jax.Array, *, hidden_sizes: Sequence[int],
                        initial_carry: list | None, seq_lengths: jax.Array | None, time_major: bool,
                        reverse: bool, keep_order: bool, return_carry: bool, bidirectional: bool, dropout: float,
                        variational: bool, key: jax.Array | None, fast: bool) -> Any:
    """`run_stack` behind Flax's RNN interface (see the module docstring)."""
    if reverse and bidirectional:
        raise ValueError("reverse=True with bidirectional=True: a bidirectional stack already runs both ways")
    xs = inputs if time_major else jnp.swapaxes(inputs, 0, 1)
    if initial_carry is None:
        dtype = cells.acc_dtype(jax.tree.leaves(params)[0].dtype)
        initial_carry = recurrent.stack_initial_carry(cell, xs.shape[1], hidden_sizes, bidirectional, dtype)
    if reverse:
        xs = recurrent.flip_sequences(xs, seq_lengths)
    carry, ys = recurrent.run_stack(cell, params, initial_carry, xs, lengths=seq_lengths, dropout=dropout,
                                    variational=variational, key=key, fast=fast, bidirectional=bidirectional)
    if reverse and keep_order:
        ys = recurrent.flip_sequences(ys, seq_lengths)
    outputs = ys if time_major else jnp.swapaxes(ys, 0, 1)
    return (carry, outputs) if return_carry else outputs


class RNN(nn.Module):
    """A linen stack of recurrent layers; `__call__(inputs, *, initial_carry, seq_lengths, deterministic)`."""

    cell: str
    hidden_sizes: Sequence[int]
    dropout: float = 0.0
    variational: bool = False
    time_major: bool = False
    reverse: bool = False
    keep_order: bool = False
    return_carry: bool = False
    bidirectional: bool = False
    fast: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, *, initial_carry: list | None = None,
                 seq_lengths: jax.Array | None = None, deterministic: bool = True) -> Any:
        cell = cells.get_cell(self.cell)
        params = self.param("layers", lambda key: recurrent.init_stack(
            cell, key, inputs.shape[-1], self.hidden_sizes, self.bidirectional, self.param_dtype))
        key = None if deterministic or self.dropout == 0.0 else self.make_rng("dropout")
        return run_flax_convention(
            cell, params, inputs, hidden_sizes=self.hidden_sizes, initial_carry=initial_carry,
            seq_lengths=seq_lengths, time_major=self.time_major, reverse=self.reverse, keep_order=self.keep_order,
            return_carry=self.return_carry, bidirectional=self.bidirectional, dropout=self.dropout,
            variational=self.variational, key=key, fast=self.fast)


class NNXRNN(nnx.Module):
    """An NNX stack of recurrent layers; `self.params` is the `init_stack` pytree.

    Dropout follows `deterministic` (set by `model.train()` / `model.eval()`, or per call)
    and draws from `rngs.dropout`.
    """

    def __init__(self, cell: str, input_size: int, hidden_sizes: Sequence[int], *, rngs: nnx.Rngs,
                 dropout: float = 0.0, variational: bool = False, time_major: bool = False, reverse: bool = False,
                 keep_order: bool = False, return_carry: bool = False, bidirectional: bool = False,
                 fast: bool = False, param_dtype: Any = jnp.float32, deterministic: bool = False):
        self.cell = cell
        self.hidden_sizes = tuple(hidden_sizes)
        params = recurrent.init_stack(cells.get_cell(cell), rngs.params(), input_size, self.hidden_sizes,
                                      bidirectional, param_dtype)
        self.layers = nnx.data(jax.tree.map(nnx.Param, params))  # one Param per array, same structure
        self.rngs = rngs
        self.dropout, self.variational, self.fast = dropout, variational, fast
        self.time_major, self.reverse, self.keep_order = time_major, reverse, keep_order
        self.return_carry, self.bidirectional, self.deterministic = return_carry, bidirectional, deterministic

    @property
    def params(self) -> list:
        """The layers' parameters as the plain pytree `init_stack` returns (and `run_stack` takes)."""
        return jax.tree.map(lambda v: v[...], self.layers, is_leaf=lambda x: isinstance(x, nnx.Variable))

    def __call__(self, inputs: jax.Array, *, initial_carry: list | None = None,
                 seq_lengths: jax.Array | None = None, deterministic: bool | None = None) -> Any:
        deterministic = self.deterministic if deterministic is None else deterministic
        key = None if deterministic or self.dropout == 0.0 else self.rngs.dropout()
        return run_flax_convention(
            cells.get_cell(self.cell), self.params, inputs, hidden_sizes=self.hidden_sizes,
            initial_carry=initial_carry, seq_lengths=seq_lengths, time_major=self.time_major, reverse=self.reverse,
            keep_order=self.keep_order, return_carry=self.return_carry, bidirectional=self.bidirectional,
            dropout=self.dropout, variational=self.variational, key=key, fast=self.fast)
