"""Running cells over sequences: one `unroll` over `jax.lax.scan`, and layer stacks.

Everything is time-major: inputs [T, B, ...]. Per-example `lengths` [B] make padded
steps inert: at t >= lengths[b] the carry is passed through unchanged and the output is 0.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from rnnjax.cells import Cell, Params

Array = jax.Array


def unroll(
    cell: Cell,
    params: Params,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    scan_unroll: int = 1,
    fast: bool = False,
) -> tuple[Any, Array]:
    """Run `cell` over `xs` [T, B, I]; returns (final carry, outputs [T, B, H]).

    Equivalent Python loop (without `lengths`):

        xp = cell.input_proj(params, xs)          # one matmul for all T steps
        ys = []
        for t in (reversed(range(T)) if reverse else range(T)):
            carry, y = cell.recur(params, carry, xp[t])
            ys.append(y)
        return carry, stack(ys in time order)

    With `lengths`, step t of example b only updates when t < lengths[b]; with
    `reverse=True` each example is therefore read from its last real step down to 0.

    `fast=True` (without `lengths`) takes the same values through `parallel_unroll` for
    cells with a `parallel` form, else through `scan_with_vjp` for cells with a
    `hidden_proj`/`core` split; other cells ignore it.
    """
    xp = cell.input_proj(params, xs)
    if lengths is None and fast and cell.parallel is not None:
        return parallel_unroll(cell, params, carry, xp, reverse)
    if lengths is None and fast and cell.core is not None:
        return scan_with_vjp(cell, params, carry, xp, reverse, scan_unroll)
    if lengths is None:

        def body(c, x_t):
            return cell.recur(params, c, x_t)

        return jax.lax.scan(body, carry, xp, reverse=reverse, unroll=scan_unroll)

    steps = jnp.arange(xs.shape[0])

    def masked_body(c, inp):
        x_t, t = inp
        new_c, y = cell.recur(params, c, x_t)
        live = (t < lengths)[:, None]
        new_c = jax.tree.map(lambda n, o: jnp.where(live, n, o), new_c, c)
        return new_c, jnp.where(live, y, jnp.zeros_like(y))

    return jax.lax.scan(masked_body, carry, (xp, steps), reverse=reverse, unroll=scan_unroll)


def parallel_unroll(cell: Cell, params: Params, carry: Any, xp: Array, reverse: bool) -> tuple[Any, Array]:
    """`cell.parallel` over projected inputs `xp` [T, B, G], in either direction."""
    if not reverse:
        return cell.parallel(params, carry, xp)
    carry, ys = cell.parallel(params, carry, xp[::-1])
    return carry, ys[::-1]


def scan_with_vjp(cell: Cell, params: Params, carry: Any, xp: Array, reverse: bool = False,
                  scan_unroll: int = 1) -> tuple[Any, Array]:
    """`lax.scan` of `cell.recur` over projected inputs `xp` [T, B, G], with a hand-written VJP.

    The forward pass saves each step's carry and recurrent projection. The backward pass
    runs the recurrence's gradient as one reverse scan that only carries the hidden-state
    gradient through `core` and the transposed recurrent matmul, and computes the
    recurrent weights' gradient after the loop as one matmul over all T*B rows (as cuDNN
    does) instead of T small ones inside it. Same values as `jax.grad` through the scan.
    """

    def run(params, carry, xp):
        def body(c, x_t):
            hp = cell.hidden_proj(params, c.h)
            new_c, y = cell.core(c, x_t, hp)
            return new_c, (y, c, hp)

        carry, (ys, prev, hps) = jax.lax.scan(body, carry, xp, reverse=reverse, unroll=scan_unroll)
        return (carry, ys), (prev, hps)

    @jax.custom_vjp
    def f(params, carry, xp):
        return run(params, carry, xp)[0]

    def fwd(params, carry, xp):
        out, (prev, hps) = run(params, carry, xp)
        return out, (params, prev, hps, xp)

    def bwd(res, grads):
        params, prev, hps, xp = res
        d_carry, d_ys = grads

        def back(dc, inp):
            c, hp, x_t, dy = inp
            _, core_vjp = jax.vjp(cell.core, c, x_t, hp)
            dc_prev, dx_t, dhp = core_vjp((dc, dy))
            _, h_vjp = jax.vjp(lambda h: cell.hidden_proj(params, h), c.h)
            dc_prev = dc_prev._replace(h=dc_prev.h + h_vjp(dhp)[0])
            return dc_prev, (dx_t, dhp)

        d_carry0, (d_xp, d_hps) = jax.lax.scan(back, d_carry, (prev, hps, xp, d_ys), reverse=not reverse,
                                               unroll=scan_unroll)
        h_all = prev.h.reshape(-1, prev.h.shape[-1])
        _, p_vjp = jax.vjp(lambda p: cell.hidden_proj(p, h_all), params)
        (d_params,) = p_vjp(d_hps.reshape(-1, d_hps.shape[-1]))
        return d_params, d_carry0, d_xp

    f.defvjp(fwd, bwd)
    return f(params, carry, xp)


def flip_sequences(xs: Array, lengths: Array | None) -> Array:
    """Reverse each example's real steps of `xs` [T, B, ...], padding staying at the end:
    with lengths [1, 3], columns [a, -, -] and [b, c, d] become [a, -, -] and [d, c, b]."""
    if lengths is None:
        return xs[::-1]
    t = jnp.arange(xs.shape[0])[:, None]
    index = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # [T, B]
    return jnp.take_along_axis(xs, index.reshape(*index.shape, *([1] * (xs.ndim - 2))), axis=0)


def dropout_mask(key: Array, rate: float, shape: tuple, dtype=jnp.float32) -> Array:
    """Inverted-dropout multiplier: 0 with probability `rate`, else 1/(1-rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return keep.astype(dtype) / (1.0 - rate)


def apply_dropout(key: Array | None, rate: float, x: Array, variational: bool) -> Array:
    """Dropout on a [T, B, D] activation; off when `key` is None or `rate` is 0.

    Zaremba-style (`variational=False`) draws a fresh mask per time step; variational
    dropout (Gal & Ghahramani) draws one mask per sequence, shared by all time steps.
    """
    if key is None or rate == 0.0:
        return x
    shape = (1, *x.shape[1:]) if variational else x.shape
    return x * dropout_mask(key, rate, shape, x.dtype)


def init_stack(cell: Cell, key: Array, input_size: int, sizes: Sequence[int],
               bidirectional: bool = False, dtype=jnp.float32) -> list:
    """Parameters (in `dtype`) for a stack of layers with hidden sizes `sizes` (may differ per layer).

    Bidirectional: each layer is a (forward, reverse) pair of cell parameters, and the
    layer above reads both directions' outputs (2H wide).
    """
    params, n_in = [], input_size
    for k, h in zip(jax.random.split(key, len(sizes)), sizes):
        if bidirectional:
            k_fwd, k_bwd = jax.random.split(k)
            params.append((cell.init(k_fwd, n_in, h, dtype), cell.init(k_bwd, n_in, h, dtype)))
        else:
            params.append(cell.init(k, n_in, h, dtype))
        n_in = 2 * h if bidirectional else h
    return params


def stack_initial_carry(cell: Cell, batch_size: int, sizes: Sequence[int], bidirectional: bool = False,
                        dtype=jnp.float32) -> list:
    """Zero carries for `run_stack`: one per layer, a (forward, reverse) pair when bidirectional.

    `dtype` is the carries' dtype, `cells.acc_dtype` of the parameters' (float32 for float32
    or bfloat16 parameters, float64 for float64 ones).
    """
    carries = [cell.initial_carry((batch_size,), h, dtype) for h in sizes]
    return [(c, c) for c in carries] if bidirectional else carries


def run_stack(
    cell: Cell,
    params: Sequence[Any],
    carries: Sequence[Any],
    xs: Array,
    *,
    lengths: Array | None = None,
    dropout: float = 0.0,
    variational: bool = False,
    key: Array | None = None,
    scan_unroll: int = 1,
    fast: bool = False,
    bidirectional: bool = False,
) -> tuple[list[Any], Array]:
    """Run a layer stack over `xs` [T, B, I]; returns (carries, top-layer outputs).

    Dropout (when `key` is given) sits on the non-recurrent connections only, as in
    Zaremba et al. 2014: on each layer's input and on the top layer's output. A
    bidirectional stack (params and carries from `init_stack`/`stack_initial_carry` with
    `bidirectional=True`) runs each layer with `run_bidirectional`.
    """
    keys = [None] * (len(params) + 1) if key is None else list(jax.random.split(key, len(params) + 1))
    layer = run_bidirectional if bidirectional else unroll
    new_carries = []
    h = xs
    for layer_params, carry, k in zip(params, carries, keys):
        h = apply_dropout(k, dropout, h, variational)
        carry, h = layer(cell, layer_params, carry, h, lengths=lengths, scan_unroll=scan_unroll, fast=fast)
        new_carries.append(carry)
    return new_carries, apply_dropout(keys[-1], dropout, h, variational)


def run_bidirectional(
    cell: Cell,
    params: tuple[Params, Params],
    carries: tuple[Any, Any],
    xs: Array,
    *,
    lengths: Array | None = None,
    scan_unroll: int = 1,
    fast: bool = False,
) -> tuple[tuple[Any, Any], Array]:
    """One bidirectional layer: forward and reverse unrolls, outputs concatenated [T, B, 2H]."""
    fwd_c, fwd_y = unroll(cell, params[0], carries[0], xs, lengths=lengths, scan_unroll=scan_unroll, fast=fast)
    bwd_c, bwd_y = unroll(cell, params[1], carries[1], xs, lengths=lengths, reverse=True, scan_unroll=scan_unroll,
                          fast=fast)
    return (fwd_c, bwd_c), jnp.concatenate([fwd_y, bwd_y], axis=-1)
