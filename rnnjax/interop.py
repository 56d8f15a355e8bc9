"""PyTorch weights in and out: `torch.nn.RNN`/`GRU`/`LSTM` and `word_language_model` LMs.

rnnjax's layer parameters are PyTorch's transposed, in the same gate order (LSTM i, f, g, o;
GRU r, z, n): `wi = weight_ih.T`, `wh = weight_hh.T`. PyTorch's two biases are kept apart
for the GRU (`bi = bias_ih`, `bh = bias_hh`: b_hn sits inside the reset product) and summed
for RNN and LSTM, where they only ever appear summed (`bi = bias_ih + bias_hh`); exporting
writes that sum as `bias_ih` and zeros as `bias_hh`, so rnnjax -> PyTorch -> rnnjax is exact
and PyTorch -> rnnjax -> PyTorch gives the same function (the same bias sum). A module built
with `bias=False` imports with zero biases.

    params = rnn_params_from_torch(torch_lstm, "lstm")          # a module or its state_dict
    carries = carries_from_torch((h0, c0), "lstm")              # or recurrent.stack_initial_carry
    carries, ys = recurrent.run_stack(cells.get_cell("lstm"), params, carries, xs)
    torch_lstm.load_state_dict(torch_state_dict(rnn_params_to_torch(params, "lstm")))

A bidirectional module gives (forward, reverse) pairs per layer: run them with
`run_stack(..., bidirectional=True)`. A state_dict cannot tell "rnn_tanh" from "rnn_relu"
(same shapes): pass the module, or the right cell.

A language model in the layout of PyTorch's `word_language_model` example (`encoder` ->
`rnn` -> `decoder`, `decoder.weight` shared with `encoder.weight` when tied) converts with
`lm_params_from_torch` / `lm_params_to_torch`; `lm_config` gives the `model.*` keys that
describe it, `reorder_vocab` maps its token ids onto a corpus's vocabulary, and
`write_lm_run` makes a run directory that `rnnjax eval` and `rnnjax sample` read.

Imports take a module or any mapping of tensors or arrays and keep their dtype (float64
weights stay float64 with `jax_enable_x64`); exports are NumPy state_dicts, which
`torch_state_dict` turns into tensors for `module.load_state_dict`. Only that function needs torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import cells, checkpoint, rundir
from rnnjax import config as config_lib
from rnnjax.config import ConfigDict
from rnnjax.errors import RunDirError, UserError
from rnnjax.model import make_lm

TORCH_CELLS = {"rnn_tanh": 1, "rnn_relu": 1, "gru": 3, "lstm": 4}  # cell -> PyTorch gate blocks
_MODES = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "GRU": "gru", "LSTM": "lstm"}
_KEY = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?")


def torch_cell_name(module: Any) -> str:
    """The rnnjax cell of a `torch.nn.RNN`/`GRU`/`LSTM` module, e.g. "rnn_relu"."""
    mode = getattr(module, "mode", None)
    if mode not in _MODES:
        raise UserError(f"expected a torch.nn.RNN, GRU or LSTM module, got {type(module).__name__}")
    if getattr(module, "proj_size", 0):
        raise UserError(f"an LSTM with proj_size={module.proj_size} has no rnnjax cell (weight_hr is not supported); "
                        f"expected proj_size=0")
    return _MODES[mode]


def _check_cell(cell: str, module: Any = None) -> None:
    """Refuse a cell PyTorch has no module for, or one that is not `module`'s."""
    if cell not in TORCH_CELLS:
        raise UserError(f"cell {cell!r} has no PyTorch counterpart; expected one of {', '.join(TORCH_CELLS)}")
    if module is not None and torch_cell_name(module) != cell:
        raise UserError(f"the module is a {torch_cell_name(module)!r} ({type(module).__name__}), not a {cell!r}")


def _numpy_state(source: Any) -> dict[str, np.ndarray]:
    state = source.state_dict() if hasattr(source, "state_dict") else source
    if not isinstance(state, Mapping):
        raise UserError(f"expected a torch module or a state_dict mapping, got {type(source).__name__}")
    return {k: _to_numpy(v) for k, v in state.items()}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _layer_count(state: Mapping[str, np.ndarray], prefix: str) -> tuple[int, bool]:
    """(num_layers, bidirectional) from the names of an RNN's state_dict entries under `prefix`."""
    layers, reverse = set(), False
    for key in state:
        if not key.startswith(prefix):
            continue
        m = _KEY.fullmatch(key[len(prefix):])
        if m is None:
            raise UserError(f"unexpected state_dict key {key!r}: expected {prefix}weight_ih_l0, {prefix}weight_hh_l0, "
                            f"{prefix}bias_ih_l0, ... (an LSTM without proj_size)")
        layers.add(int(m.group(2)))
        reverse |= m.group(3) is not None
    if not layers or layers != set(range(len(layers))):
        raise UserError(f"no complete set of layers under {prefix or 'the top level'!r}: found layers "
                        f"{sorted(layers)}, expected {prefix}weight_ih_l0, {prefix}weight_ih_l1, ...")
    return len(layers), reverse


def _entry(state: Mapping[str, np.ndarray], key: str, shape: tuple | None = None) -> np.ndarray:
    """`state[key]`, refused with a one-line error when missing or not of `shape` (None: any)."""
    if key not in state:
        raise UserError(f"state_dict has no {key!r}")
    value = state[key]
    if shape is not None and value.shape != shape:
        raise UserError(f"{key} has shape {tuple(value.shape)}, expected {shape}")
    return value


def _one_direction(state: Mapping[str, np.ndarray], prefix: str, tail: str, cell: str,
                   input_size: int | None) -> dict:
    """rnnjax parameters of one layer and direction, whose keys are `{prefix}weight_ih{tail}`, ...;
    `input_size`: the width the layer below gives (None for the first layer: any)."""
    gates, hh_key, ih_key = TORCH_CELLS[cell], f"{prefix}weight_hh{tail}", f"{prefix}weight_ih{tail}"
    w_hh = _entry(state, hh_key)
    hidden = w_hh.shape[-1] if w_hh.ndim else 0
    if w_hh.shape != (gates * hidden, hidden):
        raise UserError(f"{hh_key} has shape {tuple(w_hh.shape)}: cell {cell!r} expects ({gates} gates x hidden, "
                        f"hidden)")
    width = _entry(state, ih_key).shape[-1] if input_size is None else input_size
    w_ih = _entry(state, ih_key, (gates * hidden, width))
    b_ih, b_hh = (_entry(state, key, (gates * hidden,)) if key in state else np.zeros(gates * hidden, w_hh.dtype)
                  for key in (f"{prefix}bias_ih{tail}", f"{prefix}bias_hh{tail}"))
    params = {"wi": w_ih.T, "wh": w_hh.T, "bi": b_ih, "bh": b_hh} if cell == "gru" else \
        {"wi": w_ih.T, "wh": w_hh.T, "bi": b_ih + b_hh}
    return {k: jnp.asarray(np.ascontiguousarray(v)) for k, v in params.items()}


def rnn_params_from_torch(source: Any, cell: str, prefix: str = "") -> list:
    """The `init_stack` pytree of a PyTorch RNN/GRU/LSTM (module or state_dict, keys under
    `prefix`): one dict per layer, a (forward, reverse) pair per layer when bidirectional."""
    _check_cell(cell, source if hasattr(source, "mode") else None)
    state = _numpy_state(source)
    num_layers, bidirectional = _layer_count(state, prefix)
    layers, input_size = [], None
    for layer in range(num_layers):
        pair = tuple(_one_direction(state, prefix, f"_l{layer}{suffix}", cell, input_size)
                     for suffix in (("", "_reverse") if bidirectional else ("",)))
        layers.append(pair if bidirectional else pair[0])
        input_size = sum(p["wh"].shape[0] for p in pair)
    return layers


def _directions(layer: Any) -> tuple:
    """A layer's per-direction entries: (forward, reverse) when bidirectional, else (layer,)."""
    return tuple(layer) if isinstance(layer, (tuple, list)) and not hasattr(layer, "_fields") else (layer,)


def rnn_params_to_torch(params: list, cell: str, prefix: str = "") -> dict[str, np.ndarray]:
    """A PyTorch state_dict (NumPy arrays, keys under `prefix`) for the `init_stack` pytree `params`."""
    _check_cell(cell)
    state = {}
    for layer, p in enumerate(params):
        for suffix, q in zip(("", "_reverse"), _directions(p)):
            missing = {"wi", "wh", "bi", *(("bh",) if cell == "gru" else ())} - set(q)
            if missing:
                raise UserError(f"layer {layer}{suffix} of the {cell!r} parameters has no {sorted(missing)}")
            q = {k: np.asarray(v) for k, v in q.items()}
            bh = q["bh"] if cell == "gru" else np.zeros_like(q["bi"])
            for name, value in (("weight_ih", q["wi"].T), ("weight_hh", q["wh"].T), ("bias_ih", q["bi"]),
                                ("bias_hh", bh)):
                state[f"{prefix}{name}_l{layer}{suffix}"] = np.ascontiguousarray(value)
    return state


def carries_from_torch(hidden: Any, cell: str, bidirectional: bool = False) -> list:
    """`run_stack` carries from PyTorch's final/initial state: `h` [layers x directions, B, H],
    `(h, c)` for the LSTM; layer-major, forward before reverse, as PyTorch orders them."""
    _check_cell(cell)
    carry_type = type(cells.get_cell(cell).initial_carry((1,), 1))
    parts = [_to_numpy(s) for s in (hidden if isinstance(hidden, (tuple, list)) else (hidden,))]
    if len(parts) != len(carry_type._fields):
        raise UserError(f"a {cell!r} state has {len(carry_type._fields)} tensor(s) "
                        f"({', '.join(carry_type._fields)}), got {len(parts)}")
    per_direction = [carry_type(*(jnp.asarray(p[i]) for p in parts)) for i in range(parts[0].shape[0])]
    if not bidirectional:
        return per_direction
    return [tuple(per_direction[i : i + 2]) for i in range(0, len(per_direction), 2)]


def carries_to_torch(carries: list) -> jax.Array | tuple[jax.Array, ...]:
    """`run_stack` carries in PyTorch's state layout: `h` [layers x directions, B, H], or `(h, c)`
    (differentiable; `torch.from_numpy(np.asarray(h))` for PyTorch)."""
    flat = [c for layer in carries for c in _directions(layer)]
    parts = tuple(jnp.stack([getattr(c, f) for c in flat]) for f in flat[0]._fields)
    return parts if len(parts) > 1 else parts[0]


def lm_params_from_torch(source: Any, cell: str) -> dict:
    """rnnjax LM parameters from a `word_language_model` RNNModel (module or state_dict):
    `encoder.weight` [V, E], `rnn.*`, `decoder.weight` [V, H] and `decoder.bias` [V]. Tied
    weights (the decoder's equal to the encoder's) give a tied rnnjax LM (no `decoder.w`)."""
    rnn = getattr(source, "rnn", None)
    _check_cell(cell, rnn if hasattr(rnn, "mode") else None)
    state = _numpy_state(source)
    embed = _entry(state, "encoder.weight")
    if embed.ndim != 2:
        raise UserError(f"encoder.weight has shape {tuple(embed.shape)}, expected (vocab, embedding width)")
    layers = rnn_params_from_torch(state, cell, prefix="rnn.")
    if isinstance(layers[0], tuple):
        raise UserError("state_dict has rnn.*_reverse keys: a language model's RNN runs forward only; expected "
                        "bidirectional=False")
    _entry(state, "rnn.weight_ih_l0", (layers[0]["wi"].shape[1], embed.shape[1]))
    vocab, top = embed.shape[0], layers[-1]["wh"].shape[0]
    w_out, b_out = _entry(state, "decoder.weight", (vocab, top)), _entry(state, "decoder.bias", (vocab,))
    params = {"embed": jnp.asarray(embed), "layers": layers, "decoder": {"b": jnp.asarray(b_out)}}
    if not np.array_equal(w_out, embed):
        params["decoder"]["w"] = jnp.asarray(w_out)
    return params


def lm_params_to_torch(params: dict, cell: str) -> dict[str, np.ndarray]:
    """A `word_language_model` RNNModel state_dict (NumPy arrays) for rnnjax LM `params`."""
    embed = np.asarray(params["embed"])
    w = params["decoder"].get("w")
    return {"encoder.weight": embed, **rnn_params_to_torch(params["layers"], cell, prefix="rnn."),
            "decoder.weight": embed if w is None else np.asarray(w),
            "decoder.bias": np.asarray(params["decoder"]["b"])}


def torch_state_dict(state: Mapping[str, np.ndarray]) -> dict:
    """NumPy state_dict -> torch tensors, for `module.load_state_dict`."""
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in state.items()}


def reorder_vocab(params: dict, vocab: list[str], new_vocab: list[str]) -> dict:
    """LM `params` whose token ids follow `vocab` (e.g. word_language_model's first-seen order),
    renumbered to follow `new_vocab` (e.g. an rnnjax corpus's): embedding and decoder rows, bias."""
    if len(vocab) != params["embed"].shape[0]:
        raise UserError(f"the vocabulary has {len(vocab):,} tokens, the embedding {params['embed'].shape[0]:,} rows")
    index = {t: i for i, t in enumerate(vocab)}
    missing = [t for t in new_vocab if t not in index]
    if missing or len(new_vocab) != len(vocab):
        raise UserError(f"the vocabularies differ: {len(vocab):,} vs {len(new_vocab):,} tokens"
                        + (f", {missing[0]!r} ({len(missing):,} missing) only in the new one" if missing else ""))
    order = np.array([index[t] for t in new_vocab])
    out = {"embed": params["embed"][order], "layers": params["layers"],
           "decoder": {"b": params["decoder"]["b"][order]}}
    if "w" in params["decoder"]:
        out["decoder"]["w"] = params["decoder"]["w"][order]
    return out


def lm_config(config: ConfigDict, params: dict, cell: str) -> ConfigDict:
    """`config` with the `model.*` keys that describe LM `params` (cell, layer sizes, embedding
    width, tying) set, validated: what `make_lm` needs to build a model these parameters fit."""
    _check_cell(cell)
    sizes = tuple(int(_directions(p)[0]["wh"].shape[0]) for p in params["layers"])
    out = ConfigDict(config.to_dict())
    m = out.model
    m.cell, m.num_layers, m.hidden_size = cell, len(sizes), sizes[0]
    m.layer_sizes = () if len(set(sizes)) == 1 else sizes
    m.embed_size = int(params["embed"].shape[1])
    m.tie_embeddings = "w" not in params["decoder"]
    m.forget_bias = 0.0  # an init-time offset; it would not describe imported weights
    out.lock()
    config_lib.validate(out)
    return out


def _fitted(params: dict, config: ConfigDict, vocab_size: int) -> dict:
    """`params` cast to the dtypes of the LM `config` describes; refused unless shaped like it."""
    target = jax.eval_shape(make_lm(config, vocab_size).init, jax.random.key(0))
    shapes = [np.shape(x) for x in jax.tree.leaves(params)]
    if jax.tree.structure(params) != jax.tree.structure(target) or shapes != [x.shape for x in jax.tree.leaves(target)]:
        m = config.model
        raise UserError(f"the parameters do not fit the model the config describes (model.cell {m.cell!r}, "
                        f"num_layers {m.num_layers}, hidden_size {m.hidden_size}, layer_sizes {m.layer_sizes}, "
                        f"embed_size {m.embed_size}, tie_embeddings {m.tie_embeddings}, vocabulary {vocab_size:,}); "
                        f"set them with lm_config")
    return jax.tree.map(lambda x, t: jnp.asarray(x, t.dtype), params, target)


def write_lm_run(workdir: Path | str, config: ConfigDict, vocab: list[str], params: dict) -> Path:
    """A new run directory holding LM `params` (for `config`, over `vocab`) as its step-0
    checkpoint, with config.json and vocab.json: what `rnnjax eval` and `rnnjax sample` read.

    It holds no optimizer state, so `rnnjax train` cannot continue it. `workdir` must be new
    or empty (an existing run is never overwritten).
    """
    config_lib.validate(config)
    params = _fitted(params, config, len(vocab))
    path = Path(workdir)
    if rundir.describe(path) != "new":
        raise RunDirError(f"{path}: not empty; write the imported model into a new directory")
    with rundir.open_run(path, config) as run:
        try:
            run.write_vocab(vocab)
            with checkpoint.Checkpoints(path, config) as ckpts:
                ckpts.save(0, params, {"step": jnp.zeros((), jnp.int32)},
                           {"step": 0, "config": config.to_dict(), "vocab": vocab, "imported": True})
                ckpts.wait()
        except BaseException:
            run.abandon()
            raise
    return path
