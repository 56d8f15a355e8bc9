"""Task "echo": a random bit stream, target = input delayed by `echo.echo_step` (seq2seq, TBPTT).

    rnnjax train --config configs/echo.py --workdir runs/echo

The model is the language model's (embedding -> stacked RNN -> linear) with a 2-symbol
vocabulary and its objective; each epoch is a fresh stream cut into `train.batch_size`
rows, trained in `train.seq_len` windows with the carry passed from window to window.
Accuracy is on a fresh stream, at positions >= echo_step of each row; plot `echo.png`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import batching, loop, steps
from rnnjax.config import ConfigDict
from rnnjax.errors import ConfigError
from rnnjax.model import make_lm
from rnnjax.plots import pyplot
from rnnjax.rundir import Run


def echo_stream(seed: int, length: int, echo_step: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A random bit stream cut into `rows` rows and its echo: targets[t] = inputs[t - echo_step] (0 before)."""
    x = np.random.default_rng(seed).integers(0, 2, length).astype(np.int32)
    y = np.roll(x, echo_step)
    y[:echo_step] = 0
    cols = length // rows
    return x[: rows * cols].reshape(rows, cols), y[: rows * cols].reshape(rows, cols)


def make(config: ConfigDict, run: Run, data_dir: Path, log: Callable[[str], None]) -> loop.Task:
    t, e = config.train, config.echo
    spe = e.train_length // t.batch_size // t.seq_len
    if spe < 1:
        raise ConfigError(f"config key 'echo.train_length' = {e.train_length}: shorter than one "
                          f"{t.batch_size} x {t.seq_len} window")
    lm = make_lm(config, 2)
    stream = functools.lru_cache(maxsize=1)(
        lambda epoch: echo_stream(config.seed * 1000 + epoch, e.train_length, e.echo_step, t.batch_size))
    test_x, test_y = echo_stream(config.seed + 10_000, e.test_length, e.echo_step, t.batch_size)
    predict = jax.jit(lambda params, x: jnp.argmax(lm.apply(params, lm.initial_carry(x.shape[0]), x)[1], -1).T)

    def batch(epoch: int, index: int, rows: slice) -> batching.Batch:
        x, y = stream(epoch)
        window = slice(index * t.seq_len, (index + 1) * t.seq_len)
        return batching.Batch(x[rows, window], y[rows, window])

    def accuracy(params) -> float:
        return float((np.asarray(predict(params, test_x)) == test_y)[:, e.echo_step:].mean())

    def evaluate(params, step: int, train_loss: float) -> loop.Evaluation:
        acc = accuracy(params)
        return loop.Evaluation({"test": {"accuracy": acc}}, None, f"epoch {step / spe:.2f}: train loss "
                               f"{train_loss:.4f}, accuracy on fresh data {acc:.4%}")

    def finish(params, best_params, tally) -> tuple[dict, dict]:
        if run.writes:
            _plot_echo(run.file("echo.png"), test_x, test_y, np.asarray(predict(params, test_x)), e.echo_step)
        return {}, {"test_accuracy": accuracy(params), "test_bits": int(test_y[:, e.echo_step:].size)}

    return loop.Task(
        name="echo", model=lm, objective=steps.lm_objective(lm, config), steps_per_epoch=spe, batch=batch,
        fresh_carry=lambda index: index == 0, evaluate=evaluate, finish=finish, best=("test_accuracy", "max"),
        headline=("test_accuracy", "max"), identity={}, tokens_per_step=t.batch_size * t.seq_len,
        describe=f"echo: {e.train_length:,} bits per epoch as {t.batch_size} rows, {t.seq_len}-step windows; "
                 f"{config.model.cell} {lm.sizes}")


def _plot_echo(path: Path, x: np.ndarray, y: np.ndarray, pred: np.ndarray, echo_step: int, rows: int = 3,
               width: int = 45) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(rows, 1, figsize=(10, 1.4 * rows + 0.4))
    for r, ax in enumerate(np.atleast_1d(axes)):
        ax.imshow(np.stack([x[r, :width], y[r, :width], pred[r, :width]]), cmap="Greys", vmin=0, vmax=1,
                  aspect="auto", interpolation="nearest")
        ax.set_yticks([0, 1, 2], ["input", "target", "predicted"])
        ax.set_xticks(range(0, width, 5))
        ax.axvline(echo_step - 0.5, color="tab:red", lw=1)
    axes[0].set_title(f"echo task (delay {echo_step}): first {width} steps of {rows} test rows; "
                      f"left of the red line is not scored")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
