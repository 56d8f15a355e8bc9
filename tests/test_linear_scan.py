"""linear_scan: both forms equal the Python loop, in values and gradients; CPU lowers to the sequential one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from rnnjax import linear_scan as ls

FORMS = {"sequential": ls.sequential, "associative": ls.associative, "linear_scan": ls.linear_scan}


def _loop(a, b, h0):
    h, hs = h0, []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        hs.append(h)
    return jnp.stack(hs)


def _inputs(dtype, t=23):
    ka, kb, kh = jax.random.split(jax.random.key(0), 3)
    a = jax.random.uniform(ka, (t, 3, 4), dtype, 0.2, 1.1)  # some |a| > 1: the gradient must not assume forgetting
    return a, jax.random.normal(kb, (t, 3, 4), dtype), jax.random.normal(kh, (3, 4), dtype)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_values_and_gradients_equal_the_loop(form, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        a, b, h0 = _inputs(dtype)
        w = jnp.cos(jnp.arange(a.size, dtype=dtype)).reshape(a.shape)  # a loss that weighs every step differently

        def loss(f):
            return jax.jit(jax.value_and_grad(lambda a, b, h0: jnp.sum(w * f(a, b, h0)) + jnp.sum(f(a, b, h0)[-1] ** 2),
                                              (0, 1, 2)))

        got, want = loss(FORMS[form])(a, b, h0), loss(_loop)(a, b, h0)
        tol = 1e-5 if dtype == jnp.float32 else 1e-12
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            assert x.dtype == dtype
            np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


def test_sequential_gradient_passes_numerical_check():
    with jax.enable_x64(True):
        a, b, h0 = _inputs(jnp.float64, t=7)
        check_grads(ls.sequential, (a, b, h0), order=1, modes=["rev"])


def test_cpu_lowers_to_the_sequential_form():
    """On CPU the associative form's log-depth slicing is gone: one while loop forward."""
    a, b, h0 = _inputs(jnp.float32)
    hlo = jax.jit(ls.linear_scan).lower(a, b, h0).compile().as_text()
    assoc = jax.jit(ls.associative).lower(a, b, h0).compile().as_text()
    assert "while" in hlo and "while" not in assoc
