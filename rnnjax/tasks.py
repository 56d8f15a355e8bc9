"""What `rnnjax train` runs, by `task`: the language model and the classic small RNN tasks.

    rnnjax train --config configs/ptb.py:small  --workdir runs/ptb_small   # language model (rnnjax.loop)
    rnnjax train --config configs/sine.py       --workdir runs/sine        # many-to-one regression
    rnnjax train --config configs/echo.py       --workdir runs/echo        # seq2seq, TBPTT, carried state
    rnnjax train --config configs/sentiment.py  --workdir runs/sentiment   # padded sentence classification

Each writes metrics.jsonl (train loss every `train.log_every` steps, one evaluation
record per epoch), summary.json (`rnnjax.rundir.make_summary`) and PNG plots into its
claimed run directory. Sentence sentiment lives in `rnnjax.sentiment`; this module holds
the language model's entry, sine, echo, the shared minibatch loop and the dispatch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import batching, loop, optim, recurrent, sentiment, steps
from rnnjax.config import ConfigDict, layer_sizes
from rnnjax.data import load_corpus
from rnnjax.model import make_lm, model_cell, num_params
from rnnjax.fit import fit, write_split_records
from rnnjax.plots import pyplot
from rnnjax.rundir import Run, make_summary

Array = jax.Array


def run(run: Run, data_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Run `run.config.task` in the claimed run directory; returns (and writes) its summary."""
    runners = {"lm": run_lm, "sine": run_sine, "echo": run_echo, "sentiment": sentiment.run}
    summary = runners[run.config.task](run, data_dir, log)
    run.write_summary(summary)
    return summary


def run_lm(run: Run, data_dir: Path, log: Callable[[str], None] = print) -> dict:
    """The language model (`rnnjax.loop`): checkpoints, resume, signals, data parallelism."""
    corpus = load_corpus(run.config, data_dir)
    s = loop.train(run.config, corpus, run, log)
    log(f"valid ppl {s['valid_ppl']:.3f}, test ppl {s['test_ppl']:.3f} "
        f"({s['steps']:,} steps, {s['tokens_per_s']:,.0f} tokens/s, {s['wall_s']:.0f} s)")
    if s["floor_ppl"] is not None:
        log(f"source floor ppl {s['floor_ppl']:.3f}: valid ppl is {100 * (s['valid_ppl'] / s['floor_ppl'] - 1):.1f}% "
            f"above it")
    return s


# ----------------------------------------------------------------------------- sine

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
    """(init, apply): a stacked RNN over [B, T] scalar inputs, a linear read-out of the last step."""
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

    return init, apply


def run_sine(run: Run, data_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Many-to-one regression: next sin sample from the previous window; MSE loss."""
    config, workdir = run.config, run.path
    data = sine_data(config)
    init, apply = make_regressor(config)
    params = jax.jit(init)(jax.random.key(config.seed))
    predict = jax.jit(apply)

    def loss_fn(params, batch, key):
        x, y = batch
        return jnp.mean((apply(params, x) - y) ** 2)

    def evaluate(params, epoch):
        return {"test_mse": float(np.mean((np.asarray(predict(params, data["x_test"])) - data["y_test"]) ** 2))}

    metrics_log = run.metrics()
    log(f"sine: {len(data['y_train']):,} train / {len(data['y_test']):,} test windows of {config.sine.window}; "
        f"{config.model.cell} {layer_sizes(config)}, {num_params(params):,} params")
    start = time.time()
    params, result = fit(loss_fn, params, (data["x_train"], data["y_train"]), config, evaluate, metrics_log, log)
    metrics_log.close()
    pred = np.asarray(predict(params, data["x_test"]))
    _plot_sine(workdir / "sine_test.png", data["t_test"], data["y_test"], pred, result["test_mse"])
    y = data["y_test"]
    core = {"steps": result["steps"], "epochs": result["epochs"], "num_params": num_params(params),
            "wall_s": time.time() - start}
    return make_summary("sine", "test_mse", "min", core, {
        "test_mse": result["test_mse"],
        "baseline_mean_mse": float(np.mean((y - data["y_train"].mean()) ** 2)),  # predict the train mean
        "baseline_last_mse": float(np.mean((y - data["x_test"][:, -1]) ** 2)),  # repeat the last input
    })


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


# ----------------------------------------------------------------------------- echo

def echo_stream(seed: int, length: int, echo_step: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """A random bit stream cut into `rows` rows and its echo: targets[t] = inputs[t - echo_step] (0 before)."""
    x = np.random.default_rng(seed).integers(0, 2, length).astype(np.int32)
    y = np.roll(x, echo_step)
    y[:echo_step] = 0
    cols = length // rows
    return x[: rows * cols].reshape(rows, cols), y[: rows * cols].reshape(rows, cols)


def run_echo(run: Run, data_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Delayed echo of a bit stream: truncated BPTT over `train.seq_len` windows, carry passed between them.

    The model is the language model's (embedding -> stacked RNN -> linear) with a
    2-symbol vocabulary, trained by the same `train_step`; its state, one carry per
    layer, rides in `TrainState.carry` from window to window. Each epoch is a fresh
    stream. Accuracy is on a fresh stream, at positions >= echo_step of each row.
    """
    config, workdir = run.config, run.path
    t, e = config.train, config.echo
    cols = e.train_length // t.batch_size
    spe = cols // t.seq_len
    total = spe * t.num_epochs if t.max_steps <= 0 else min(spe * t.num_epochs, t.max_steps)
    lm = make_lm(config, 2)
    lr_schedule = optim.schedule(config, spe, total)
    opt = optim.optimizer(config, lr_schedule)
    init_key, step_key = jax.random.split(jax.random.key(config.seed))
    state = steps.init_state(lm, opt, init_key, t.batch_size)
    train_step = steps.make_train_step(lm, opt, lr_schedule, config)
    test_x, test_y = echo_stream(config.seed + 10_000, e.test_length, e.echo_step, t.batch_size)
    predict = jax.jit(lambda params, x: jnp.argmax(lm.apply(params, lm.initial_carry(x.shape[0]), x)[1], -1).T)

    def accuracy(params) -> float:
        pred = np.asarray(predict(params, test_x))
        return float((pred == test_y)[:, e.echo_step:].mean())

    metrics_log = run.metrics()
    log(f"echo: {e.train_length:,} bits per epoch as {t.batch_size} rows, {t.seq_len}-step windows, "
        f"{spe} steps/epoch, {total} steps; {config.model.cell} {lm.sizes}, {num_params(state.params):,} params")
    start, step, losses, acc = time.time(), 0, [], float("nan")
    for epoch in range(math.ceil(total / spe)):
        x, y = echo_stream(config.seed * 1000 + epoch, e.train_length, e.echo_step, t.batch_size)
        state = state._replace(carry=lm.initial_carry(t.batch_size))
        for i in range(min(spe, total - step)):
            window = slice(i * t.seq_len, (i + 1) * t.seq_len)
            state, m = train_step(state, batching.Batch(jnp.asarray(x[:, window]), jnp.asarray(y[:, window])),
                                  step_key)
            losses.append(m["loss"])
            step += 1
            if step % t.log_every == 0:
                metrics_log.write({"step": step, "epoch": step / spe, "split": "train", "loss": float(m["loss"])})
        acc = accuracy(state.params)
        write_split_records(metrics_log, step, step / spe, {"test_accuracy": acc}, wall_s=time.time() - start)
        log(f"epoch {epoch + 1}: train loss {float(np.mean(losses[-spe:])):.4f}, accuracy on fresh data {acc:.4%}")
    metrics_log.close()
    pred = np.asarray(predict(state.params, test_x))
    _plot_echo(workdir / "echo.png", test_x, test_y, pred, e.echo_step)
    core = {"steps": step, "epochs": step / spe, "num_params": num_params(state.params),
            "wall_s": time.time() - start}
    return make_summary("echo", "test_accuracy", "max", core,
                        {"test_accuracy": acc, "test_bits": int(test_y[:, e.echo_step:].size)})


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
