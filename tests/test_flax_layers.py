"""The Flax module and the pure functions give identical outputs from the same parameters."""

import jax
import numpy as np

from rnnjax import cells, recurrent
from rnnjax.flax_layers import RNN


def test_module_equals_pure_stack():
    xs = jax.random.normal(jax.random.key(0), (7, 2, 4))
    module = RNN(cell="lstm", hidden_sizes=(5, 3), dropout=0.3)
    variables = module.init(jax.random.key(1), xs)
    carries, ys = module.apply(variables, xs)
    cell = cells.get_cell("lstm")
    params = variables["params"]["layers"]
    want_c, want_y = recurrent.run_stack(cell, params, recurrent.stack_initial_carry(cell, 2, (5, 3)), xs)
    np.testing.assert_array_equal(ys, want_y)
    jax.tree.map(np.testing.assert_array_equal, carries, want_c)

    _, d1 = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(9)})
    _, d2 = module.apply(variables, xs, deterministic=False, rngs={"dropout": jax.random.key(9)})
    np.testing.assert_array_equal(d1, d2)
    assert not np.array_equal(d1, ys)
