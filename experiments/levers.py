"""What each speed lever gives on this machine: interleaved A/B timings of jitted functions.

    nice -n 10 python experiments/levers.py --shape small --cell lstm --repeats 9

Groups (each timed interleaved, median ms per call over `--repeats`):
  decoder: the decoder + softmax cross-entropy value-and-gradient on [T, B, H] hidden states,
           optax on [T, B, V] logits (reference) vs `rnnjax.model.decoder_nll` (fast);
  layer:   one layer's forward + backward, `jax.grad` through `lax.scan` (reference) vs
           `recurrent.scan_with_vjp` (fast; min_gru/min_lstm: `rnnjax.linear_scan`);
  step:    the full jitted train step (forward, backward, clipping, SGD) with
           `model.impl` reference vs fast and `model.scan_unroll` 1, 2, 4, 8;
  linscan: min_gru/min_lstm's full train step (fast impl) with each form of
           `rnnjax.linear_scan` (associative, sequential) in place of the per-platform choice;
  orient:  the recurrent product alone inside a T-step scan shaped like a layer's forward,
           `h @ W` (W [H, G], as stored) vs `h @ Wt.T` (`Wt = W.T` materialised before the scan).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import SHAPES, jax_config, token_batches  # noqa: E402

from rnnjax import batching, cells, linear_scan, optim, recurrent  # noqa: E402
from rnnjax.model import decoder_nll, make_lm, token_nll  # noqa: E402
from rnnjax.steps import init_state, make_train_step  # noqa: E402


def interleaved(fns: dict, repeats: int, calls: int = 3) -> dict[str, float]:
    """Median ms per call of each no-argument function, timed A B C A B C ..."""
    for f in fns.values():
        jax.block_until_ready(f())
        jax.block_until_ready(f())
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(calls):
                out = f()
            jax.block_until_ready(out)
            times[name].append((time.perf_counter() - t0) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def decoder_group(shape, repeats):
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    h = jax.random.normal(k1, (shape.seq_len, shape.batch, shape.hidden))
    w = jax.random.uniform(k2, (shape.vocab, shape.hidden), minval=-0.1, maxval=0.1)  # [V, H], as model.py
    b = jnp.zeros((shape.vocab,))
    t = jax.random.randint(k3, (shape.batch, shape.seq_len), 0, shape.vocab)

    def reference(h, w, b):
        return token_nll(h @ w.T + b, t).mean()

    def fast(h, w, b):
        return decoder_nll(h.reshape(-1, shape.hidden), w, b, t.T.reshape(-1)).mean()

    ref, fst = (jax.jit(jax.value_and_grad(f, (0, 1, 2))) for f in (reference, fast))
    fwd = jax.jit(reference)
    return interleaved({"decoder fwd only": lambda: fwd(h, w, b), "decoder fwd+bwd reference": lambda: ref(h, w, b),
                        "decoder fwd+bwd fast (decoder_nll)": lambda: fst(h, w, b)}, repeats)


def layer_group(shape, cell_name, repeats):
    cell = cells.get_cell(cell_name)
    k1, k2 = jax.random.split(jax.random.key(1))
    params = cell.init(k1, shape.hidden, shape.hidden)
    carry = cell.initial_carry((shape.batch,), shape.hidden)
    xs = jax.random.normal(k2, (shape.seq_len, shape.batch, shape.hidden))

    def loss(fast):
        def f(params, xs):
            _, ys = recurrent.unroll(cell, params, carry, xs, fast=fast)
            return jnp.sum(ys**2)

        return jax.jit(jax.grad(f, (0, 1)))

    ref, fst = loss(False), loss(True)
    fast_name = "linear_scan" if cell.parallel is not None else "scan_with_vjp"
    return interleaved({"layer fwd+bwd reference": lambda: ref(params, xs),
                        f"layer fwd+bwd fast ({fast_name})": lambda: fst(params, xs)}, repeats)


def step_group(shape, cell_name, repeats, unrolls):
    batch = token_batches(shape, 1)[0]
    b = batching.Batch(jnp.asarray(batch[:, :-1]), jnp.asarray(batch[:, 1:]))
    key = jax.random.key(0)
    fns, boxes = {}, {}
    variants = [("reference", 1)] + [("fast", u) for u in unrolls]
    for impl, unroll in variants:
        config = jax_config(cell_name, shape, impl)
        config.model.scan_unroll = unroll
        lm = make_lm(config, shape.vocab)
        sched = optim.schedule(config, 1000, 1000)
        opt = optim.optimizer(config, sched)
        step = make_train_step(lm, opt, sched, config)
        name = f"train step impl={impl} scan_unroll={unroll}"
        boxes[name] = [init_state(lm, opt, key, shape.batch), step]

        def run(box=boxes[name]):
            box[0], metrics = box[1](box[0], b, key)
            return metrics

        fns[name] = run
    return interleaved(fns, repeats)


def linscan_group(shape, cell_name, repeats):
    """The train step traced once with each `linear_scan` form (the cells module's name for it
    is swapped while the step is traced, so the compiled steps differ only there)."""
    batch = token_batches(shape, 1)[0]
    b = batching.Batch(jnp.asarray(batch[:, :-1]), jnp.asarray(batch[:, 1:]))
    key = jax.random.key(0)
    config = jax_config(cell_name, shape, "fast")
    lm = make_lm(config, shape.vocab)
    sched = optim.schedule(config, 1000, 1000)
    opt = optim.optimizer(config, sched)
    chosen = cells.linear_scan
    fns = {}
    for form in ("associative", "sequential"):
        cells.linear_scan = getattr(linear_scan, form)
        try:
            step = make_train_step(lm, opt, sched, config)
            box = [init_state(lm, opt, key, shape.batch)]
            box[0], _ = step(box[0], b, key)  # traced and compiled here, with this form
        finally:
            cells.linear_scan = chosen

        def run(box=box, step=step):
            box[0], metrics = step(box[0], b, key)
            return metrics

        fns[f"train step, linear_scan {form}"] = run
    return interleaved(fns, repeats)


def orient_group(shape, cell_name, repeats):
    h_size, gates = shape.hidden, {"lstm": 4, "gru": 3}.get(cell_name, 1)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    w = jax.random.uniform(k1, (h_size, gates * h_size), minval=-0.05, maxval=0.05)
    h0 = jax.random.normal(k2, (shape.batch, h_size))
    xs = jax.random.normal(k3, (shape.seq_len, shape.batch, h_size))

    def scan(product):
        @jax.jit
        def run(w, h0, xs):
            wt = w.T  # materialised once per call when `product` contracts its last axis

            def body(h, x):
                y = product(h, w, wt)
                h = jnp.tanh(y[:, :h_size] + y[:, -h_size:] + x)
                return h, h

            return jax.lax.scan(body, h0, xs)[1]

        return lambda: run(w, h0, xs)

    return interleaved({
        f"recurrent product h @ W [{h_size}, {gates * h_size}] in the scan": scan(lambda h, w, wt: h @ w),
        "same, h @ Wt.T with Wt = W.T before the scan": scan(
            lambda h, w, wt: jax.lax.dot_general(h, wt, (((1,), (1,)), ((), ())))),
    }, repeats)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--cell", default="lstm")
    p.add_argument("--groups", default="decoder,layer,step", help="comma list of decoder,layer,step,linscan,orient")
    p.add_argument("--unrolls", default="1,2,4,8")
    p.add_argument("--repeats", type=int, default=9)
    args = p.parse_args(argv)
    shape = SHAPES[args.shape]
    groups = args.groups.split(",")
    print(f"shape {args.shape} {tuple(shape)}, cell {args.cell}, jax {jax.__version__}, "
          f"{jax.devices()[0].device_kind}, repeats {args.repeats}")
    results = {}
    if "decoder" in groups:
        results.update(decoder_group(shape, args.repeats))
    if "layer" in groups:
        results.update(layer_group(shape, args.cell, args.repeats))
    if "step" in groups:
        results.update(step_group(shape, args.cell, args.repeats, [int(u) for u in args.unrolls.split(",")]))
    if "linscan" in groups:
        results.update(linscan_group(shape, args.cell, args.repeats))
    if "orient" in groups:
        results.update(orient_group(shape, args.cell, args.repeats))
    print("| what | ms per call (median) |\n|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {ms:.1f} |")


if __name__ == "__main__":
    main()
