"""The language model: embedding -> stacked RNN -> dropout -> decoder, as pure functions.

    params = lm.init(key)
    carries = lm.initial_carry(batch_size)
    carries, logits = lm.apply(params, carries, tokens, key=None)   # tokens [B, T]

`logits` are time-major [T, B, V]; `key=None` means evaluation (no dropout).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import cells, recurrent
from rnnjax.config import ConfigDict, ConfigError, layer_sizes

Array = jax.Array


class LanguageModel(NamedTuple):
    init: Callable[[Array], dict]
    initial_carry: Callable[[int], list]
    apply: Callable[..., tuple[list, Array]]
    sizes: list[int]
    vocab_size: int


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

    def init(key: Array) -> dict:
        k_embed, k_layers, k_dec, k_scale = jax.random.split(key, 4)
        params = {
            "embed": jax.random.uniform(k_embed, (vocab_size, n_embed), jnp.float32, -0.1, 0.1),
            "layers": recurrent.init_stack(cell, k_layers, n_embed, sizes),
            "decoder": {"b": jnp.zeros((vocab_size,), jnp.float32)},
        }
        if not m.tie_embeddings:
            params["decoder"]["w"] = jax.random.uniform(k_dec, (sizes[-1], vocab_size), jnp.float32, -0.1, 0.1)
        if m.init_scale > 0:
            leaves, treedef = jax.tree.flatten(params)
            keys = jax.random.split(k_scale, len(leaves))
            leaves = [jax.random.uniform(k, x.shape, x.dtype, -m.init_scale, m.init_scale) for k, x in zip(keys, leaves)]
            params = jax.tree.unflatten(treedef, leaves)
        return params

    def initial_carry(batch_size: int) -> list:
        return recurrent.stack_initial_carry(cell, batch_size, sizes)

    def apply(params: dict, carries: list, tokens: Array, key: Array | None = None) -> tuple[list, Array]:
        x = params["embed"][tokens.T]  # [T, B, E], gathered time-major
        carries, h = recurrent.run_stack(
            cell, params["layers"], carries, x,
            dropout=m.dropout, variational=m.dropout_type == "variational",
            key=key, scan_unroll=m.scan_unroll,
        )
        w = params["decoder"].get("w")
        w = params["embed"].T if w is None else w
        return carries, h @ w + params["decoder"]["b"]

    return LanguageModel(init, initial_carry, apply, sizes, vocab_size)


def num_params(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
