"""The linear recurrence h_t = a_t * h_{t-1} + b_t over a sequence, fast on every platform.

    hs = linear_scan(a, b, h0)      # a, b [T, ...]; h0 [...]; hs [T, ...]

equals the Python loop

    h = h0
    for t in range(T):
        h = a[t] * h + b[t]
        hs[t] = h

min_gru and min_lstm (`rnnjax.cells`) train through it. Two forms compute it:

- `associative`: `jax.lax.associative_scan` over (a, b) pairs, O(log T) depth and about twice
  the work. It is the form for accelerators, where depth is what costs.
- `sequential`: `jax.lax.scan` with a hand-written VJP. The backward of the recurrence is the
  same recurrence run in reverse, g_t = dh_t + a_{t+1} * g_{t+1}, and then da_t = g_t * h_{t-1},
  db_t = g_t and dh0 = a_0 * g_0. Each direction is one fused multiply-add per step. It is the
  form for CPUs, which have no parallel width to spend on the associative form's extra work
  (`experiments/results/levers.md`).

`linear_scan` picks one per platform at lowering time (`jax.lax.platform_dependent`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def linear_scan(a: Array, b: Array, h0: Array) -> Array:
    """All states h_1..h_T of h_t = a_t * h_{t-1} + b_t from `h0`: the sequential form on CPU,
    the associative form elsewhere."""
    return jax.lax.platform_dependent(a, b, h0, cpu=sequential, default=associative)


def associative(a: Array, b: Array, h0: Array) -> Array:
    """`linear_scan` as `jax.lax.associative_scan`.

    The initial state folds into the first step (b_0 + a_0 * h0), and (a1, b1) then (a2, b2)
    compose as (a1 * a2, a2 * b1 + b2). The products are plain, not log-space: in float32 they
    underflow towards 0 (forgetting) but never divide.
    """
    b = b.at[0].set(a[0] * h0 + b[0])

    def compose(first, second):
        return first[0] * second[0], second[0] * first[1] + second[1]

    return jax.lax.associative_scan(compose, (a, b), axis=0)[1]


def _scan(a: Array, b: Array, h0: Array, reverse: bool = False) -> Array:
    def step(h, ab):
        h = ab[0] * h + ab[1]
        return h, h

    return jax.lax.scan(step, h0, (a, b), reverse=reverse)[1]


@jax.custom_vjp
def sequential(a: Array, b: Array, h0: Array) -> Array:
    """`linear_scan` as one `jax.lax.scan`, whose backward is one reverse scan of the same form."""
    return _scan(a, b, h0)


def _sequential_fwd(a, b, h0):
    hs = _scan(a, b, h0)
    return hs, (a, h0, hs)


def _sequential_bwd(res, d_hs):
    a, h0, hs = res
    a_next = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])])
    g = _scan(a_next, d_hs, jnp.zeros_like(h0), reverse=True)  # g_t = dh_t + a_{t+1} * g_{t+1}
    h_prev = jnp.concatenate([h0[None], hs[:-1]])
    return g * h_prev, g, a[0] * g[0]


sequential.defvjp(_sequential_fwd, _sequential_bwd)
