"""Training and inference speed of the rnnjax language model against PyTorch, side by side.

    nice -n 10 python experiments/bench.py --shapes small,medium --cells lstm,gru --mode train,eval \
        --repeats 7 --json experiments/results/bench_cpu.json

For every (shape, cell, mode) row it builds the rnnjax LM (`rnnjax.model.make_lm`, the
jitted `rnnjax.steps.make_train_step` / `make_eval_step`) and the equivalent PyTorch
model (nn.Embedding -> nn.RNN/GRU/LSTM -> nn.Linear, the same cross entropy, global-norm
clipping and SGD, default threads) in this process, warms both up, then times them
interleaved A B A B ... `--repeats` times; tokens/s is the median over repeats and
`ratio` = rnnjax median / PyTorch median. Both carry the RNN state from step to step
(truncated BPTT). Without PyTorch the rnnjax column is still measured and the ratio is
reported as unavailable. Cells PyTorch has no module for (min_gru, min_lstm) get no
PyTorch column.

Modes: `train` = forward, backward, clipping and the optimizer update; `eval` = forward
and the summed token NLL without gradients; `sample` = generation of SAMPLE_LENGTH tokens
for each of `batch` sequences after a one-token prime, drawing from the softmax and feeding
each token back (rnnjax: `rnnjax.sampling`'s one jitted scan; PyTorch: a Python loop of
one-step calls under inference_mode, as its examples do). Also reported per row: compile time (rnnjax:
lowering + XLA compilation; PyTorch: its first step), steps until the step time settles
(first warm-up step within 10% of the median of the last warm-up steps), and memory
(rnnjax: XLA's buffer total for the compiled step, or the device's peak where the
backend reports one; the process's peak RSS, which covers both frameworks).

`--dtype float32,bfloat16` adds a row per dtype: bfloat16 runs rnnjax with
`model.compute_dtype = "bfloat16"` (bfloat16 matmuls on float32 parameters) and PyTorch's
forward under `torch.autocast(device, dtype=torch.bfloat16)` (its backward and optimizer
step outside it, as PyTorch's AMP recipe does); both keep float32 parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from rnnjax import batching, host_memory, optim, parallel, sampling
from rnnjax.config import defaults
from rnnjax.errors import ConfigError
from rnnjax.model import make_lm, num_params
from rnnjax.steps import init_state, make_eval_step, make_train_step

try:
    import torch
except ImportError:  # the `bench` extra is optional
    torch = None


class Shape(NamedTuple):
    vocab: int
    batch: int
    seq_len: int
    hidden: int
    layers: int


SHAPES = {
    "small": Shape(10_000, 20, 20, 200, 2),  # Zaremba et al. 2014 PTB small
    "medium": Shape(10_000, 20, 35, 650, 2),
    "large": Shape(10_000, 20, 35, 1500, 2),
    "char": Shape(83, 100, 100, 512, 2),  # Karpathy's char-rnn
    # long sequences, where the parallel-scan cells (min_gru, min_lstm) should pull ahead
    "t100": Shape(83, 16, 100, 256, 2),
    "t512": Shape(83, 16, 512, 256, 2),
    "t2048": Shape(83, 16, 2048, 256, 2),
    "tiny": Shape(83, 4, 10, 32, 1),  # a smoke test of the script, not a benchmark
}
TORCH_CELLS = {"rnn_tanh": "RNN", "gru": "GRU", "lstm": "LSTM"}
TARGET_S = 0.5  # wall time of one timed repeat
WARMUP_STEPS = 8
SAMPLE_LENGTH = 100  # tokens generated per sequence in `sample` mode


DTYPES = ("float32", "bfloat16")


def jax_config(cell: str, shape: Shape, impl: str | None, dtype: str = "float32"):
    c = defaults()
    c.model.compute_dtype = dtype
    c.model.cell = cell
    c.model.num_layers = shape.layers
    c.model.hidden_size = shape.hidden
    c.train.batch_size = shape.batch
    c.train.seq_len = shape.seq_len
    c.train.optimizer = "sgd"
    c.train.learning_rate = 1.0
    c.train.clip_norm = 5.0
    if impl is not None:
        c.model.impl = impl
    return c


def token_batches(shape: Shape, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, shape.vocab, (shape.batch, shape.seq_len + 1), dtype=np.int32) for _ in range(n)]


class Runner(NamedTuple):
    """A framework's model at one row: compile/first call, then `step()` to time."""

    setup: Callable[[], float]  # returns seconds for compilation (or the first call)
    step: Callable[[], None]
    sync: Callable[[], None]
    memory: Callable[[], dict]


def jax_runner(cell: str, shape: Shape, mode: str, impl: str | None, batches: list[np.ndarray],
               dtype: str = "float32") -> tuple[Runner, dict]:
    config = jax_config(cell, shape, impl, dtype)
    lm = make_lm(config, shape.vocab)
    opt = optim.optimizer(config, optim.schedule(config, 1000, 1000))
    key = jax.random.key(0)
    state = init_state(lm, opt, key, shape.batch)
    info = {"num_params": num_params(state.params)}
    data = [batching.Batch(jnp.asarray(b[:, :-1]), jnp.asarray(b[:, 1:])) for b in batches]
    weights = jnp.ones((shape.batch, shape.seq_len), jnp.float32)
    prime = jnp.asarray(batches[0][0, :1])
    box: dict[str, Any] = {"i": 0, "state": state, "carry": state.carry}
    compiled: dict[str, Any] = {}

    def setup() -> float:
        t0 = time.perf_counter()
        if mode == "train":
            fn = make_train_step(lm, opt, optim.schedule(config, 1000, 1000), config)
            compiled["fn"] = fn.lower(box["state"], data[0], key).compile()
        elif mode == "sample":
            compiled["fn"] = sampling._generate.lower(lm, box["state"].params, prime, SAMPLE_LENGTH, key,
                                                      sampling.Sampler(), shape.batch).compile()
        else:
            fn = make_eval_step(lm)
            compiled["fn"] = fn.lower(box["state"].params, box["carry"], data[0].inputs, data[0].targets,
                                      weights).compile()
        return time.perf_counter() - t0

    def step() -> None:
        b = data[box["i"] % len(data)]
        box["i"] += 1
        if mode == "train":
            box["state"], box["out"] = compiled["fn"](box["state"], b, key)
        elif mode == "sample":
            box["out"] = compiled["fn"](box["state"].params, prime, jax.random.fold_in(key, box["i"]))
        else:
            box["carry"], nll, _ = compiled["fn"](box["state"].params, box["carry"], b.inputs, b.targets, weights)
            box["out"] = nll

    def sync() -> None:
        jax.block_until_ready(box["out"])

    def memory() -> dict:
        out = {}
        ma = compiled["fn"].memory_analysis()
        if ma is not None:
            total = ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
            out["rnnjax_xla_buffers_mb"] = round(total / 2**20, 1)
        stats = jax.devices()[0].memory_stats()
        if stats and "peak_bytes_in_use" in stats:
            out["rnnjax_device_peak_mb"] = round(stats["peak_bytes_in_use"] / 2**20, 1)
        return out

    return Runner(setup, step, sync, memory), info


def torch_runner(cell: str, shape: Shape, mode: str, batches: list[np.ndarray], dtype: str = "float32") -> Runner:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)

    def amp():  # the forward's precision: float32, or bfloat16 autocast on float32 parameters
        if dtype == "bfloat16":
            return torch.autocast(device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    class LM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(shape.vocab, shape.hidden)
            kind = TORCH_CELLS[cell]
            kwargs = {"nonlinearity": "tanh"} if kind == "RNN" else {}
            self.rnn = getattr(torch.nn, kind)(shape.hidden, shape.hidden, shape.layers, **kwargs)
            self.decoder = torch.nn.Linear(shape.hidden, shape.vocab)

        def forward(self, tokens, hidden):
            y, hidden = self.rnn(self.embed(tokens.t()), hidden)  # time-major, as rnnjax
            return self.decoder(y), hidden

    model = LM().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    def init_hidden():
        zeros = torch.zeros(shape.layers, shape.batch, shape.hidden, device=device)
        return (zeros, zeros.clone()) if cell == "lstm" else zeros

    box: dict[str, Any] = {"i": 0, "hidden": init_hidden()}
    data = [(torch.from_numpy(b[:, :-1].astype(np.int64)).to(device),
             torch.from_numpy(b[:, 1:].T.astype(np.int64)).reshape(-1).to(device)) for b in batches]

    def detach(h):
        return tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()

    def step() -> None:
        x, y = data[box["i"] % len(data)]
        box["i"] += 1
        if mode == "train":
            opt.zero_grad(set_to_none=True)
            with amp():
                logits, hidden = model(x, detach(box["hidden"]))
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, shape.vocab), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            box["hidden"] = hidden
        elif mode == "sample":  # as rnnjax.sampling: draw from the softmax, feed the token back
            with torch.inference_mode(), amp():
                hidden = init_hidden()
                logits, hidden = model(x[:, :1], hidden)
                for _ in range(SAMPLE_LENGTH):
                    token = torch.multinomial(torch.softmax(logits[-1], -1), 1)
                    logits, hidden = model(token, hidden)
        else:
            with torch.inference_mode(), amp():
                logits, box["hidden"] = model(x, box["hidden"])
                torch.nn.functional.cross_entropy(logits.reshape(-1, shape.vocab), y, reduction="sum")

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def setup() -> float:
        t0 = time.perf_counter()
        step()
        sync()
        return time.perf_counter() - t0

    def memory() -> dict:
        if device == "cuda":
            return {"torch_device_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        return {}

    return Runner(setup, step, sync, memory)


def settle(runner: Runner, steps: int) -> tuple[int, float]:
    """Warm-up steps, each timed; returns (steps until within 10% of the settled time, that time)."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        runner.step()
        runner.sync()
        times.append(time.perf_counter() - t0)
    settled = statistics.median(times[-max(1, steps // 3):])
    first = next(i for i, t in enumerate(times) if t <= 1.1 * settled)
    return first + 1, settled


def timed(runner: Runner, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        runner.step()
    runner.sync()
    return time.perf_counter() - t0


def bench_row(shape_name: str, cell: str, mode: str, repeats: int, impl: str | None, log: Callable,
              warmup: int = WARMUP_STEPS, dtype: str = "float32") -> dict:
    shape = SHAPES[shape_name]
    tokens = shape.batch * (SAMPLE_LENGTH if mode == "sample" else shape.seq_len)
    batches = token_batches(shape, 4)
    runners = {}
    jr, info = jax_runner(cell, shape, mode, impl, batches, dtype)
    runners["rnnjax"] = jr
    if torch is not None and cell in TORCH_CELLS:
        runners["torch"] = torch_runner(cell, shape, mode, batches, dtype)
    row: dict[str, Any] = {"shape": shape_name, "cell": cell, "mode": mode, "dtype": dtype,
                           "impl": jax_config(cell, shape, impl, dtype).model.impl, **shape._asdict(),
                           "tokens_per_step": tokens, **info}
    per_step = {}
    for name, r in runners.items():
        row[f"{name}_compile_s"] = round(r.setup(), 3)
        row[f"{name}_steps_to_steady"], per_step[name] = settle(r, warmup)
    n = {name: max(2, math.ceil(TARGET_S / t)) for name, t in per_step.items()}
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, r in runners.items():  # interleaved: A B A B ...
            rates[name].append(n[name] * tokens / timed(r, n[name]))
    for name in ("rnnjax", "torch"):
        row[f"{name}_tokens_per_s"] = round(statistics.median(rates[name]), 1) if name in rates else None
        row[f"{name}_steps_per_repeat"] = n.get(name)
    if "torch" in rates:
        row["ratio"] = round(row["rnnjax_tokens_per_s"] / row["torch_tokens_per_s"], 3)
        row["paired_ratio_median"] = round(statistics.median(a / b for a, b in zip(rates["rnnjax"], rates["torch"])), 3)
    else:
        row["ratio"] = None
        row["ratio_note"] = "PyTorch not installed or --no-torch" if torch is None else f"PyTorch has no {cell} module"
    for r in runners.values():
        row.update(r.memory())
    row["process_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    row["repeats"] = repeats
    log(row)
    return row


def scaling_rows(counts: list[int], shape_name: str, cell: str, global_batch: int, repeats: int) -> list[dict]:
    """Train-step tokens/s with one global batch split over each of `counts` devices (rnnjax.parallel).

    Uses the devices JAX sees: on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=8
    simulates 8 devices that share the same cores, which checks the sharded code path but
    is no speed-up claim; on a multi-GPU host it is the real figure.
    """
    shape = SHAPES[shape_name]._replace(batch=global_batch)
    tokens = shape.batch * shape.seq_len
    batches = token_batches(shape, 4)
    rows = []
    for n in counts:
        config = jax_config(cell, shape, None)
        config.parallel.num_devices = n
        layout = parallel.make_layout(config)
        lm = make_lm(config, shape.vocab)
        schedule = optim.schedule(config, 1000, 1000)
        opt = optim.optimizer(config, schedule)
        key = jax.random.key(0)
        data = [parallel.place_batch(layout, lambda r, b=b: batching.Batch(b[r, :-1], b[r, 1:])) for b in batches]
        train_step = make_train_step(lm, opt, schedule, config)
        box: dict[str, Any] = {"i": 0, "state": parallel.place_state(layout, init_state(lm, opt, key, shape.batch))}

        def step() -> None:
            box["state"], box["out"] = train_step(box["state"], data[box["i"] % len(data)], key)
            box["i"] += 1

        def sync() -> None:
            jax.block_until_ready(box["out"])

        runner = Runner(None, step, sync, None)
        compile_s = timed(runner, 1)
        steady, per_step = settle(runner, WARMUP_STEPS)
        k = max(2, math.ceil(TARGET_S / per_step))
        rate = statistics.median(k * tokens / timed(runner, k) for _ in range(repeats))
        row = {"mode": "scaling", "shape": shape_name, "cell": cell, **shape._asdict(), "devices": n,
               "per_device_batch": shape.batch // n, "tokens_per_step": tokens, "rnnjax_tokens_per_s": round(rate, 1),
               "speedup_vs_first": round(rate / rows[0]["rnnjax_tokens_per_s"], 3) if rows else 1.0,
               "first_step_s": round(compile_s, 3), "steps_to_steady": steady, "steps_per_repeat": k,
               "repeats": repeats, "visible_devices": jax.device_count()}
        print(f"{shape_name:>7} {cell:>8} devices {n}  {rate:>10,.0f} tok/s  x{row['speedup_vs_first']:.2f}", flush=True)
        rows.append(row)
    return rows


def hardware(malloc_tuned: bool) -> dict:
    model = platform.processor()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "device_kind": jax.devices()[0].device_kind,
        "backend": jax.default_backend(),
        "jax_version": jax.__version__,
        "jaxlib_version": jaxlib.__version__,
        "torch_version": None if torch is None else torch.__version__,
        "torch_threads": None if torch is None else torch.get_num_threads(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "host_malloc": "tuned" if malloc_tuned else "glibc default",
        "torch_device": None if torch is None else ("cuda" if torch.cuda.is_available() else "cpu"),
    }


def _print_row(row: dict) -> None:
    ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
    torch_rate = "n/a" if row["torch_tokens_per_s"] is None else f"{row['torch_tokens_per_s']:,.0f}"
    print(f"{row['shape']:>7} {row['cell']:>8} {row['mode']:>5} {row['dtype']:>8} {row['impl']:>9}  rnnjax {row['rnnjax_tokens_per_s']:>10,.0f} tok/s  "
          f"torch {torch_rate:>10} tok/s  ratio {ratio}  compile {row['rnnjax_compile_s']:.1f}s", flush=True)


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table (what experiments/results/bench_*.md hold)."""

    def num(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = ["| shape | cell | mode | dtype | impl | B x T, layers x H, V | rnnjax tok/s | PyTorch tok/s | ratio | "
             "rnnjax compile s | steps to steady (rnnjax / torch) | XLA buffers MB | repeats |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['cell']} | {r['mode']} | {r.get('dtype', 'float32')} | {r.get('impl', 'fast')} | {r['batch']}x{r['seq_len']}, {r['layers']}x{r['hidden']}, "
            f"{r['vocab']} | {num(r['rnnjax_tokens_per_s'], ',.0f')} | {num(r['torch_tokens_per_s'], ',.0f')} | "
            f"{num(r['ratio'], '.2f')} | {r['rnnjax_compile_s']:.1f} | {r['rnnjax_steps_to_steady']} / "
            f"{r.get('torch_steps_to_steady', 'n/a')} | {num(r.get('rnnjax_xla_buffers_mb'), '.0f')} | {r['repeats']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="small,medium", help=f"comma list of {','.join(SHAPES)}")
    p.add_argument("--cells", default="rnn_tanh,gru,lstm")
    p.add_argument("--mode", default="train,eval", help="comma list of train,eval,sample")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="timed warm-up steps after compilation")
    p.add_argument("--impl", default=None, help="model.impl for rnnjax (default: the config default)")
    p.add_argument("--dtype", default="float32", help="comma list of float32,bfloat16: compute precision (rnnjax "
                   "model.compute_dtype; PyTorch autocast)")
    p.add_argument("--json", type=Path, default=None, help="write the rows (a JSON list) here")
    p.add_argument("--scaling", default=None, help="comma list of device counts (e.g. 1,2,4,8): train tokens/s "
                   "of the first shape and cell against data-parallel device count, instead of the comparison")
    p.add_argument("--scaling-batch", type=int, default=64, help="global batch for --scaling")
    p.add_argument("--no-torch", action="store_true", help="time rnnjax only (no PyTorch column)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads; 0: PyTorch's default")
    p.add_argument("--render", type=Path, nargs="+", default=None,
                   help="print the rows of these --json files as a Markdown table and exit")
    args = p.parse_args(argv)
    if args.render:
        rows = [row for f in args.render for row in json.loads(f.read_text())]
        print(markdown(rows))
        return rows
    # before any thread allocates, as the rnnjax command does; per process, so PyTorch gets it too
    malloc_tuned = host_memory.tune()
    shapes, cells_, modes, dtypes = (s.split(",") for s in (args.shapes, args.cells, args.mode, args.dtype))
    for s in shapes:
        if s not in SHAPES:
            p.error(f"unknown shape {s!r}; expected one of {', '.join(SHAPES)}")
    for m in modes:
        if m not in ("train", "eval", "sample"):
            p.error(f"unknown mode {m!r}; expected train, eval or sample")
    for d in dtypes:
        if d not in DTYPES:
            p.error(f"unknown dtype {d!r}; expected {' or '.join(DTYPES)}")
    if args.no_torch:
        global torch
        torch = None
    if args.torch_threads and torch is not None:
        torch.set_num_threads(args.torch_threads)
    hw = hardware(malloc_tuned)
    print(json.dumps(hw))
    if args.scaling:
        rows = [{**r, **hw} for r in scaling_rows([int(n) for n in args.scaling.split(",")], shapes[0], cells_[0],
                                                  args.scaling_batch, args.repeats)]
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
        return rows
    if torch is None:
        print("PyTorch not installed (pip install -e .[bench]) or --no-torch: ratios unavailable")
    rows = []
    for s in shapes:
        for c in cells_:
            for m in modes:
                for d in dtypes:
                    try:
                        row = bench_row(s, c, m, args.repeats, args.impl, _print_row, args.warmup, d)
                    except ConfigError as e:  # e.g. --impl cudnn on a CPU: one line, as rnnjax says it
                        p.exit(2, f"{p.prog}: error: {e}\n")
                    rows.append({**row, **hw})
                    if args.json:
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
