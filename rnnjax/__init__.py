"""rnnjax: recurrent networks as pure JAX functions."""

from rnnjax.cells import CELLS, Cell, GRUCarry, LSTMCarry, RNNCarry, get_cell, register_cell, step
from rnnjax.recurrent import run_bidirectional, run_stack, unroll

__all__ = ["CELLS", "Cell", "GRUCarry", "LSTMCarry", "RNNCarry", "get_cell", "register_cell", "step",
           "run_bidirectional", "run_stack", "unroll"]
