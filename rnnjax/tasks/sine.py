"""Task "sine": predict sin at the next point from the previous `sine.window` samples (many-to-one regression).

    rnnjax train --config configs/sine.py --workdir runs/sine

Shuffled minibatches of windows, MSE loss; the test MSE is logged every epoch; the summary
adds two baselines (predict the train mean, repeat the last input) and `sine_test.png`.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import batching, loop, recurrent, steps
from rnnjax.config import ConfigDict, layer_sizes
from rnnjax.errors import ConfigError
from rnnjax.model import model_cell
from rnnjax.plots import pyplot
from rnnjax.rundir import Run

Array = jax.Array


def sine_data(config: ConfigDict) -> dict[str, np.ndarray]:
    """Windows of `sine.window` samples of sin(x), x = i * spacing, and the sample that follows each.

    The series has train_points + test_points samples; train targets are samples
    window .. train_points-1, test targets the test_points samples after the train range.
    """
    s = config.sine
    y = np.sin(np.arange(s.train_points + s.test_points) * s.spacing).astype(np.float32)
    starts = np.arange(len(y) - s.window)
    windows = y[starts[:, None] + np.arange(s.window)]  # [N, window]
    targets = y[starts + s.window]
    n_train = s.train_points - s.window
    return {"x_train": windows[:n_train], "y_train": targets[:n_train],
            "x_test": windows[n_train:], "y_test": targets[n_train:],
            "t_test": (starts[n_train:] + s.window) * s.spacing}


def make_regressor(config: ConfigDict):
    """(model, apply): a stacked RNN over [B, T] scalar inputs, a linear read-out of the last step; the
    model carries nothing from batch to batch."""
    cell = model_cell(config)
    sizes = layer_sizes(config)

    def init(key: Array) -> dict:
        k_rnn, k_out = jax.random.split(key)
        bound = 1.0 / math.sqrt(sizes[-1])
        return {"layers": recurrent.init_stack(cell, k_rnn, 1, sizes),
                "out": {"w": jax.random.uniform(k_out, (sizes[-1],), jnp.float32, -bound, bound),
                        "b": jnp.zeros((), jnp.float32)}}

    def apply(params: dict, x: Array) -> Array:
        carries = recurrent.stack_initial_carry(cell, x.shape[0], sizes)
        carries, _ = recurrent.run_stack(cell, params["layers"], carries, x.T[:, :, None],
                                         scan_unroll=config.model.scan_unroll)
        return carries[-1].h @ params["out"]["w"] + params["out"]["b"]

    return steps.Model(init, lambda batch_size: ()), apply


def make(config: ConfigDict, run: Run, data_dir: Path, log: Callable[[str], None]) -> loop.Task:
    data = sine_data(config)
    model, apply = make_regressor(config)
    predict = jax.jit(apply)
    t = config.train
    n = len(data["y_train"])
    spe = n // t.batch_size
    if spe < 1:
        raise ConfigError(f"config key 'train.batch_size' = {t.batch_size}: larger than the {n} training windows")

    def objective(params, carry, batch, key):
        x, y = batch
        loss = jnp.mean((apply(params, x) - y) ** 2)
        return loss, (carry, loss)

    order = functools.lru_cache(maxsize=1)(lambda epoch: batching.minibatch_order(config.seed, epoch, n))

    def batch(epoch: int, index: int, rows: slice):
        idx = order(epoch)[index * t.batch_size:(index + 1) * t.batch_size][rows]
        return data["x_train"][idx], data["y_train"][idx]

    def test_mse(params) -> float:
        return float(np.mean((np.asarray(predict(params, data["x_test"])) - data["y_test"]) ** 2))

    def evaluate(params, step: int, train_loss: float) -> loop.Evaluation:
        mse = test_mse(params)
        return loop.Evaluation({"test": {"mse": mse}}, None,
                               f"epoch {step / spe:.2f}: train mse {train_loss:.6g}, test mse {mse:.6g}")

    def finish(params, best_params, tally) -> tuple[dict, dict]:
        y = data["y_test"]
        pred = np.asarray(predict(params, data["x_test"]))
        mse = float(np.mean((pred - y) ** 2))
        if run.writes:
            _plot_sine(run.file("sine_test.png"), data["t_test"], y, pred, mse)
        return {}, {"test_mse": mse,
                    "baseline_mean_mse": float(np.mean((y - data["y_train"].mean()) ** 2)),  # predict the train mean
                    "baseline_last_mse": float(np.mean((y - data["x_test"][:, -1]) ** 2))}  # repeat the last input

    return loop.Task(
        name="sine", model=model, objective=objective, steps_per_epoch=spe, batch=batch,
        fresh_carry=lambda index: False, evaluate=evaluate, finish=finish, best=("test_mse", "min"),
        headline=("test_mse", "min"), identity={}, tokens_per_step=None,
        describe=f"sine: {n:,} train / {len(data['y_test']):,} test windows of {config.sine.window}; "
                 f"{config.model.cell} {layer_sizes(config)}")


def _plot_sine(path: Path, t: np.ndarray, true: np.ndarray, pred: np.ndarray, mse: float) -> None:
    plt = pyplot()
    fig, (ax, ax_err) = plt.subplots(2, 1, figsize=(8, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(t, true, label="sin(x)", lw=3, alpha=0.5)
    ax.plot(t, pred, label="predicted", lw=1)
    ax.set_title(f"next-sample prediction on the test range (MSE {mse:.2e})")
    ax.legend()
    ax_err.plot(t, pred - true, lw=1)
    ax_err.set_ylabel("error")
    ax_err.set_xlabel("x")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
