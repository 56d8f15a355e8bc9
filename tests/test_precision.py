"""`model.compute_dtype = "bfloat16"`: bfloat16 matmuls on float32 parameters (rnnjax.model.compute_params).

Tolerances, measured on the 2-layer model below (init_scale 0.5, so the logits are far from uniform
and the relu units live): the bfloat16 loss is within 2e-4 of float32's, relatively, and each
gradient leaf within 1.1% (relative norm of the difference), for every cell and both impls; the
tests allow 1e-3 and 3e-2. Trained through the CLI (tiny LSTM, 72 Adam steps), the validation
loss moved by 0.03% (valid ppl 14.113 against 14.109); the test allows 1%.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import batching, cells, cli, optim, steps
from rnnjax import config as config_lib
from rnnjax.config import defaults
from rnnjax.errors import ConfigError
from rnnjax.model import make_lm

import tiny

VOCAB, BATCH, SEQ = 24, 4, 10
LOSS_RTOL, GRAD_RTOL = 1e-3, 3e-2


def small_config(cell: str, impl: str, compute_dtype: str, **model):
    c = defaults()
    c.model.update(cell=cell, impl=impl, compute_dtype=compute_dtype, hidden_size=16, embed_size=8, num_layers=2,
                   init_scale=0.5, **model)
    config_lib.validate(c)
    return c


def tokens() -> jax.Array:
    return jax.random.randint(jax.random.key(1), (BATCH, SEQ + 1), 0, VOCAB)


def loss_fn(lm):
    toks = tokens()

    def loss(params):
        carries, nll = lm.nll(params, lm.initial_carry(BATCH), toks[:, :-1], toks[:, 1:])
        return nll.mean(), carries

    return loss


def equations(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs inside it (scans, custom VJPs, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from equations(inner)


def matmul_dtypes(fn, *args) -> Counter:
    """(lhs, rhs) dtypes of every matmul `fn` runs, its backward pass included."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return Counter(tuple(str(v.aval.dtype) for v in e.invars) for e in equations(jaxpr)
                   if e.primitive.name == "dot_general")


@pytest.mark.parametrize("impl", ["fast", "reference"])
@pytest.mark.parametrize("cell", sorted(cells.CELLS))  # the built-in cells (collected before any test registers one)
def test_bfloat16_loss_and_gradients_close_to_float32(cell, impl):
    params = make_lm(small_config(cell, impl, "float32"), VOCAB).init(jax.random.key(0))
    out = {}
    for dtype in ("float32", "bfloat16"):
        f = jax.value_and_grad(loss_fn(make_lm(small_config(cell, impl, dtype), VOCAB)), has_aux=True)
        out[dtype] = jax.jit(f)(params)
        if dtype == "bfloat16":  # every matmul, forward and backward, takes bfloat16 operands
            assert set(matmul_dtypes(f, params)) == {("bfloat16", "bfloat16")}
    (loss32, _), grads32 = out["float32"]
    (loss16, carries16), grads16 = out["bfloat16"]
    assert loss16.dtype == jnp.float32 and float(loss16) != float(loss32)  # computed, and in bfloat16
    assert abs(float(loss16) - float(loss32)) <= LOSS_RTOL * abs(float(loss32))
    assert {x.dtype for x in jax.tree.leaves(carries16)} == {jnp.dtype(jnp.float32)}
    for (path, g32), g16 in zip(jax.tree_util.tree_leaves_with_path(grads32), jax.tree.leaves(grads16), strict=True):
        assert g16.dtype == jnp.float32, jax.tree_util.keystr(path)
        err = float(jnp.linalg.norm(g16 - g32) / jnp.linalg.norm(g32))
        assert err <= GRAD_RTOL, f"{cell} {impl} {jax.tree_util.keystr(path)}: relative gradient error {err:.3g}"


def test_float32_matmuls_unchanged():
    lm = make_lm(small_config("lstm", "fast", "float32"), VOCAB)
    params = lm.init(jax.random.key(0))
    assert set(matmul_dtypes(jax.grad(lambda p: loss_fn(lm)(p)[0]), params)) == {("float32", "float32")}


@pytest.mark.parametrize("cell", ["lstm", "min_gru"])
def test_train_step_keeps_params_optimizer_state_and_carry_float32(cell):
    config = small_config(cell, "fast", "bfloat16", dropout=0.2)
    config.train.optimizer = "adam"
    config.train.learning_rate = 0.01
    lm = make_lm(config, VOCAB)
    schedule = optim.schedule(config, 10, 10)
    opt = optim.optimizer(config, schedule)
    state = steps.init_state(lm, opt, jax.random.key(0), BATCH)
    toks = tokens()
    batch = batching.Batch(toks[:, :-1], toks[:, 1:])
    train_step = steps.make_train_step(lm, opt, schedule, config)
    for _ in range(2):
        state, metrics = train_step(state, batch, jax.random.key(1))
    assert bool(metrics["finite"]) and metrics["loss"].dtype == jnp.float32
    for part in (state.params, state.opt_state, state.carry):
        assert {x.dtype for x in jax.tree.leaves(part) if jnp.issubdtype(x.dtype, jnp.floating)} == {
            jnp.dtype(jnp.float32)}


def test_float64_parameters_are_never_cast():
    with jax.enable_x64(True):
        lm32, lm16 = (make_lm(small_config("gru", "fast", d), VOCAB) for d in ("float32", "bfloat16"))
        params = lm32.init(jax.random.key(0), jnp.float64)
        toks = tokens()
        carries = lm32.initial_carry(BATCH, jnp.float64)
        (c32, nll32), (c16, nll16) = (lm.nll(params, carries, toks[:, :-1], toks[:, 1:]) for lm in (lm32, lm16))
        assert nll16.dtype == jnp.float64 and c16[0].h.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(nll16), np.asarray(nll32))


TINY = {**tiny.LM, "train.optimizer": "adam", "train.learning_rate": 0.02, "train.num_epochs": 3}


def train(workdir: Path, **overrides) -> dict:
    argv = ["train", "--workdir", str(workdir), "--config", "quickstart"]
    assert cli.main(argv + [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()]) == 0
    return json.loads((workdir / "summary.json").read_text())


def test_cli_bfloat16_training_reaches_the_float32_loss(tmp_path, capsys):
    """3 epochs (72 steps) of the tiny LSTM from the same initialisation: the validation loss
    trained in bfloat16 is within 1% of float32's."""
    f32 = train(tmp_path / "f32")
    bf16 = train(tmp_path / "bf16", **{"model.compute_dtype": "bfloat16"})
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["model"]["compute_dtype"] == "bfloat16"
    assert bf16["valid_loss"] < 0.9 * np.log(24)  # it learned something
    assert abs(bf16["valid_loss"] - f32["valid_loss"]) <= 0.01 * f32["valid_loss"], (bf16["valid_loss"],
                                                                                     f32["valid_loss"])


def test_cudnn_and_other_tasks_refuse_bfloat16(tmp_path, capsys):
    assert cli.main(["train", "--workdir", str(tmp_path / "run"), "--config.model.impl=cudnn",
                     "--config.model.compute_dtype=bfloat16"]) == 2
    err = capsys.readouterr().err
    assert err == ("rnnjax: error: config key 'model.compute_dtype' = 'bfloat16': expected 'float32' with "
                   "model.impl = 'cudnn' (jax.experimental.rnn runs float32 only)\n")
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match=r"'model.compute_dtype' = 'bfloat16': expected 'float32' with "
                                          r"task = 'sine' \(it applies to the language model of tasks lm and echo\)"):
        config_lib.resolve("quickstart", {"model.compute_dtype": "bfloat16", "task": "sine"})
    with pytest.raises(ConfigError, match=r"'model.compute_dtype' = 'float16': expected 'float32' or 'bfloat16'"):
        config_lib.resolve("quickstart", {"model.compute_dtype": "float16"})
