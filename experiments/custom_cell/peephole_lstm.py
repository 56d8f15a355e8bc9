"""A new cell in user code: a peephole LSTM, registered and trained with the standard runner.

    python experiments/custom_cell/peephole_lstm.py [--steps 1200] [--workdir runs/peephole]

or from the shell, naming this file as the module that registers the cell:

    rnnjax train --config.model.cell_module=experiments/custom_cell/peephole_lstm.py \
        --config.model.cell=peephole_lstm --workdir runs/peephole
    rnnjax eval --workdir runs/peephole          # config.json names the module: imported again
    rnnjax sample --workdir runs/peephole --prime a --length 100

No library file is edited: the cell is four pure functions (see `rnnjax.cells.Cell`),
importing this file registers it as `model.cell=peephole_lstm` (`register_cell`), and the
standard runner trains it on the generated quickstart corpus, with the hoisted input
projection, the scanned unroll, dropout, TBPTT, checkpoints and sweeps for free.

Peephole LSTM (Gers & Schmidhuber 2000): the gates also look at the cell state,

    i  = sigmoid(W_i x + U_i h + p_i * c + b_i)
    f  = sigmoid(W_f x + U_f h + p_f * c + b_f)
    c' = f * c + i * tanh(W_g x + U_g h + b_g)
    o  = sigmoid(W_o x + U_o h + p_o * c' + b_o)
    h' = o * tanh(c')
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

from rnnjax import cli
from rnnjax.cells import Cell, LSTMCarry, register_cell


def init(key: jax.Array, input_size: int, hidden_size: int, dtype=jnp.float32) -> dict:
    k_wi, k_wh, k_peep = jax.random.split(key, 3)
    scale = hidden_size**-0.5
    uniform = lambda k, shape: jax.random.uniform(k, shape, dtype, -scale, scale)  # noqa: E731
    return {"wi": uniform(k_wi, (input_size, 4 * hidden_size)), "wh": uniform(k_wh, (hidden_size, 4 * hidden_size)),
            "b": jnp.zeros((4 * hidden_size,), dtype), "peep": uniform(k_peep, (3, hidden_size))}


def initial_carry(batch_shape: tuple, hidden_size: int, dtype=jnp.float32) -> LSTMCarry:
    zeros = jnp.zeros((*batch_shape, hidden_size), dtype)
    return LSTMCarry(zeros, zeros)


def input_proj(params: dict, x: jax.Array) -> jax.Array:
    """The carry-free part of the step, computed for all time steps at once by `unroll`."""
    return x.astype(params["wi"].dtype) @ params["wi"] + params["b"]


def recur(params: dict, carry: LSTMCarry, xp: jax.Array) -> tuple[LSTMCarry, jax.Array]:
    i, f, g, o = jnp.split(xp + carry.h @ params["wh"], 4, axis=-1)
    p_i, p_f, p_o = params["peep"]
    c = jax.nn.sigmoid(f + p_f * carry.c) * carry.c + jax.nn.sigmoid(i + p_i * carry.c) * jnp.tanh(g)
    h = jax.nn.sigmoid(o + p_o * c) * jnp.tanh(c)
    return LSTMCarry(h, c), h


PEEPHOLE_LSTM = Cell(init, initial_carry, input_proj, recur)
register_cell("peephole_lstm", PEEPHOLE_LSTM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--workdir", default="runs/peephole_lstm")
    args = parser.parse_args(argv)
    return cli.main(["train", "--config", "quickstart", "--workdir", args.workdir,
                     f"--config.model.cell_module={__file__}", "--config.model.cell=peephole_lstm", f"--config.train.max_steps={args.steps}"])


if __name__ == "__main__":
    sys.exit(main())
