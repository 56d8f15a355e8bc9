"""The language model: embedding -> stacked RNN -> dropout -> decoder, as pure functions.

    params = lm.init(key)                     # lm.init(key, jnp.float64) for a float64 model
    carries = lm.initial_carry(batch_size)    # lm.initial_carry(batch_size, jnp.float64)
    carries, logits = lm.apply(params, carries, tokens, key=None)   # tokens [B, T]
    carries, nll = lm.nll(params, carries, tokens, targets, key=None)  # per-token NLL [T, B]

`logits` are time-major [T, B, V]; `key=None` means evaluation (no dropout). `nll` is
what training and evaluation use: with `model.impl = "fast"` it runs the layers through
`recurrent.scan_with_vjp` and the decoder through `decoder_nll`, which never hands the
[T, B, V] logits to autodiff; with "reference" it is `token_nll(apply(...))`; with "cudnn"
(LSTM, float32, a GPU) the layers run through `rnnjax.cudnn` (`jax.experimental.rnn`) on the
same parameters and the decoder through `decoder_nll`. The loss is computed in the wider of
the parameters' dtype and float32 (`cells.acc_dtype`).

`model.compute_dtype = "bfloat16"` is mixed precision, as Flax's `dtype` beside `param_dtype`:
each step casts the float32 parameters to bfloat16 in one place (`compute_params`, at the
top of `hidden`), and the rule every matmul follows (operands in the weights' dtype, result
in `cells.acc_dtype`, see `rnnjax.cells`) does the rest: the embedding rows, every input and
recurrent projection and the decoder matmul are bfloat16; the gates, the carries (h, c), the
logits, the softmax and the loss are float32; the parameters, their gradients (through the
cast) and the optimizer state stay float32. Float64 parameters are never cast.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax import cells, cudnn, recurrent
from rnnjax.config import ConfigDict, apply_overrides, layer_sizes
from rnnjax.errors import ConfigError

Array = jax.Array


class LanguageModel(NamedTuple):
    init: Callable[..., dict]  # (key, dtype=float32) -> params
    initial_carry: Callable[..., list]  # (batch_size, dtype=float32) -> carries
    apply: Callable[..., tuple[list, Array]]
    sizes: tuple[int, ...]
    vocab_size: int
    nll: Callable[..., tuple[list, Array]]


@jax.custom_vjp
def decoder_nll(h: Array, w: Array, b: Array, targets: Array) -> Array:
    """Per-row NLL of `targets` [N] under logits `h @ w.T + b` (h [N, H], w [V, H]), fused.

    Forward: logits, log-sum-exp, minus the target logit (a gather). Backward: the logits'
    gradient (softmax - one_hot(target)) * g in one elementwise pass where the one-hot
    is an iota comparison fused into that pass (never materialised), then dh = d @ w,
    dw = d.T @ h, db = sum(d): two matmuls over all time steps at once.
    """
    return _decoder_nll_fwd(h, w, b, targets)[0]


def logits_of(h: Array, w: Array, b: Array) -> Array:
    """`h @ w.T + b` for a decoder weight `w` [V, H] (`torch.nn.Linear`'s layout, and the tied
    embedding's): the matmul in the weights' dtype, the result in its `cells.acc_dtype`."""
    acc = cells.acc_dtype(w.dtype)
    return (h.astype(w.dtype) @ w.T).astype(acc) + b.astype(acc)


def _decoder_nll_fwd(h, w, b, targets):
    logits = logits_of(h, w, b)
    lse = jax.nn.logsumexp(logits, axis=-1)
    nll = lse - jnp.take_along_axis(logits, targets[:, None], axis=-1)[:, 0]
    return nll, (h, w, b, targets, logits, lse)


def _decoder_nll_bwd(res, g):
    h, w, b, targets, logits, lse = res
    hit = jnp.arange(logits.shape[-1])[None, :] == targets[:, None]
    d = (jnp.exp(logits - lse[:, None]) - hit) * g[:, None]
    dc = d.astype(w.dtype)  # the matmuls in the weights' dtype, as the forward's
    dh = (dc @ w).astype(h.dtype)
    dw = (dc.T @ h.astype(w.dtype)).astype(w.dtype)
    return dh, dw, d.sum(0).astype(b.dtype), None


decoder_nll.defvjp(_decoder_nll_fwd, _decoder_nll_bwd)


def token_nll(logits: Array, targets_bt: Array) -> Array:
    """Per-token negative log-likelihood [T, B] of [B, T] targets under [T, B, V] logits."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(cells.acc_dtype(logits.dtype)),
                                                           targets_bt.T)


def compute_params(params: Any, dtype) -> Any:
    """`params` as a step computes with them (`model.compute_dtype`): float32 leaves cast to
    `dtype`, the others (float64, bfloat16) as they are."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return params
    return jax.tree.map(lambda p: p.astype(dtype) if p.dtype == jnp.float32 else p, params)


def model_cell(config: ConfigDict) -> cells.Cell:
    cell = cells.get_cell(config.model.cell)
    if config.model.cell == "lstm" and config.model.forget_bias:
        cell = cells.lstm_with_forget_bias(config.model.forget_bias)
    return cell


def embed_size(config: ConfigDict) -> int:
    return config.model.embed_size or layer_sizes(config)[0]


def make_lm(config: ConfigDict, vocab_size: int) -> LanguageModel:
    """Build the pure functions of the language model described by `config.model`."""
    m = config.model
    cell = model_cell(config)
    sizes = layer_sizes(config)
    n_embed = embed_size(config)
    if m.tie_embeddings and sizes[-1] != n_embed:
        raise ConfigError(
            f"model.tie_embeddings needs the top layer size ({sizes[-1]}) to equal the embedding size ({n_embed})"
        )
    if m.impl == "cudnn":
        cudnn.check_backend()

    def init(key: Array, dtype=jnp.float32) -> dict:
        k_embed, k_layers, k_dec, k_scale = jax.random.split(key, 4)
        params = {
            "embed": jax.random.uniform(k_embed, (vocab_size, n_embed), dtype, -0.1, 0.1),
            "layers": recurrent.init_stack(cell, k_layers, n_embed, sizes, dtype=dtype),
            "decoder": {"b": jnp.zeros((vocab_size,), dtype)},
        }
        if not m.tie_embeddings:
            params["decoder"]["w"] = jax.random.uniform(k_dec, (sizes[-1], vocab_size), dtype, -0.1, 0.1)
        if m.init_scale > 0:
            leaves, treedef = jax.tree.flatten(params)
            keys = jax.random.split(k_scale, len(leaves))
            leaves = [jax.random.uniform(k, x.shape, x.dtype, -m.init_scale, m.init_scale) for k, x in zip(keys, leaves)]
            params = jax.tree.unflatten(treedef, leaves)
        if not m.tie_embeddings:
            # drawn [H, V] as before the decoder was stored [V, H] (so a seed gives the same model),
            # stored [V, H]: XLA's CPU matmuls read it 14-19% faster when sampling (levers.md)
            params["decoder"]["w"] = params["decoder"]["w"].T
        return params

    def initial_carry(batch_size: int, dtype=jnp.float32) -> list:
        return recurrent.stack_initial_carry(cell, batch_size, sizes, dtype=dtype)

    def hidden(params: dict, carries: list, tokens: Array, key: Array | None
               ) -> tuple[list, Array, Array, Array]:
        """(carries, top-layer outputs [T, B, H] in the carries' dtype, decoder weights [V, H] (the
        embedding when tied) and bias in the compute dtype)."""
        # embedding rows [T, B, E] gathered time-major from the stored table, then cast, so that
        # the table's gradient sums in float32; everything after computes with the cast parameters
        x = params["embed"][tokens.T]
        params = compute_params(params, m.compute_dtype)
        x = x.astype(params["embed"].dtype)
        if m.impl == "cudnn":
            carries, h = cudnn.run_stack(params["layers"], carries, x, dropout=m.dropout,
                                         variational=m.dropout_type == "variational", key=key)
        else:
            carries, h = recurrent.run_stack(
                cell, params["layers"], carries, x,
                dropout=m.dropout, variational=m.dropout_type == "variational",
                key=key, scan_unroll=m.scan_unroll, fast=m.impl == "fast",
            )
        w = params["decoder"].get("w", params["embed"])
        return carries, h, w, params["decoder"]["b"]

    def apply(params: dict, carries: list, tokens: Array, key: Array | None = None) -> tuple[list, Array]:
        carries, h, w, b = hidden(params, carries, tokens, key)
        return carries, logits_of(h, w, b)

    def nll(params: dict, carries: list, tokens: Array, targets: Array, key: Array | None = None
            ) -> tuple[list, Array]:
        if m.impl == "reference":
            carries, logits = apply(params, carries, tokens, key)
            return carries, token_nll(logits, targets)
        carries, h, w, b = hidden(params, carries, tokens, key)
        t, n = tokens.shape[1], tokens.shape[0]
        flat = decoder_nll(h.reshape(t * n, -1), w, b, targets.T.reshape(-1))
        return carries, flat.reshape(t, n)

    return LanguageModel(init, initial_carry, apply, tuple(sizes), vocab_size, nll)


def num_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def check_fits(config: ConfigDict, vocab_size: int, limit: int, where: str) -> None:
    """Refuse, naming the sizes, a model whose parameters, gradients and two optimizer slots exceed
    `limit` bytes: XLA aborts the process on such an allocation rather than raising."""
    n = param_count(config, vocab_size)
    need = 4 * 4 * n  # float32 params, gradients and up to two optimizer moments
    if need > limit:
        raise ConfigError(f"the model has {n:,} parameters, {need / 2**30:,.1f} GiB with gradients and optimizer "
                          f"state: more than the {where} memory ({limit / 2**30:,.1f} GiB); reduce "
                          f"model.hidden_size ({config.model.hidden_size}), model.num_layers or the vocabulary "
                          f"({vocab_size:,})")


MATCH_TOLERANCE = 0.02  # sweep.match_params: relative parameter-count difference allowed


def param_count(config: ConfigDict, vocab_size: int) -> int:
    """Parameters of the model `config` describes, from shapes only (nothing is allocated)."""
    if config.model.impl == "cudnn":  # same parameters; and no GPU needed to count them (a sweep's planner)
        config = apply_overrides(config, {"model.impl": "reference"})
    shapes = jax.eval_shape(make_lm(config, vocab_size).init, jax.random.key(0))
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)))


def matched_hidden_size(config: ConfigDict, vocab_size: int) -> int:
    """The hidden size giving `config.model.cell` the parameter count of an LSTM at `model.hidden_size`.

    Counts grow with the hidden size, so a bisection finds the closest; a miss of more than
    2% (e.g. tiny models) is an error rather than a silently unfair comparison.
    """
    if config.model.layer_sizes:
        raise ConfigError("sweep.match_params needs model.layer_sizes = () (one hidden size for every layer)")
    target = param_count(apply_overrides(config, {"model.cell": "lstm"}), vocab_size)
    if config.model.cell == "lstm":
        return config.model.hidden_size

    def count(h: int) -> int:
        return param_count(apply_overrides(config, {"model.hidden_size": str(h)}), vocab_size)

    lo, hi = 1, max(2, config.model.hidden_size)
    while count(hi) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    best = min((lo, hi), key=lambda h: abs(count(h) - target))
    miss = abs(count(best) - target) / target
    if miss > MATCH_TOLERANCE:
        raise ConfigError(f"sweep.match_params: no hidden size gives cell {config.model.cell!r} within 2% of the "
                          f"LSTM's {target:,} parameters (closest: hidden {best}, {100 * miss:.1f}% off)")
    return best
