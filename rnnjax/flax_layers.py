"""Flax (linen) modules over the same pure cells, for use inside a Flax model.

Linen rather than NNX: a linen module's variables are a plain pytree, so the params a
module holds are exactly the pytree `cell.init` returns and `unroll` consumes; `apply`
stays a pure function under jit/scan/grad with no object state to split or merge.

    rnn = RNN(cell="lstm", hidden_sizes=(200, 200))
    variables = rnn.init(key, xs)                       # xs [T, B, I], time-major
    carries, ys = rnn.apply(variables, xs)              # same as rnnjax.run_stack(...)
    # variables["params"]["layers"] is the list rnnjax.recurrent.init_stack returns.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax

from rnnjax import cells, recurrent


class RNN(nn.Module):
    """A stack of recurrent layers over time-major inputs, wrapping `rnnjax.run_stack`.

    Dropout (Zaremba-style, or variational with `variational=True`) is on when
    `deterministic=False` and a `dropout` PRNG stream is given to `apply`.
    """

    cell: str
    hidden_sizes: Sequence[int]
    dropout: float = 0.0
    variational: bool = False

    @nn.compact
    def __call__(self, xs: jax.Array, carries: list[Any] | None = None, lengths: jax.Array | None = None,
                 deterministic: bool = True) -> tuple[list[Any], jax.Array]:
        cell = cells.get_cell(self.cell)
        params = self.param("layers", lambda key: recurrent.init_stack(cell, key, xs.shape[-1], self.hidden_sizes))
        if carries is None:
            carries = recurrent.stack_initial_carry(cell, xs.shape[1], self.hidden_sizes)
        key = None if deterministic or self.dropout == 0.0 else self.make_rng("dropout")
        return recurrent.run_stack(cell, params, carries, xs, lengths=lengths, dropout=self.dropout,
                                   variational=self.variational, key=key)
