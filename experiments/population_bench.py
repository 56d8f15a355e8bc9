"""Throughput of a population (K seeds as one vmapped program, `sweep.vmap_axes`) against the
same K runs as K separate processes started together, in the same run of this script.

    python experiments/population_bench.py --sizes 1,3,8,16 --steps 200 \
        --out experiments/results/population.md

For each K it runs, one after the other: (a) `rnnjax sweep --population ...` with K members,
(b) K `rnnjax train` processes at once. Tokens/s is steady state: the median `tokens_per_s`
of each run's metrics.jsonl train records after the first `--skip` (compilation and warm-up
left out), summed over the K members (a) or the K processes (b). The model is
Zaremba-small's shape (2 x 200 LSTM, batch 20, 20 steps of BPTT) on PTB words
(`--corpus`, from `--data-dir`, default ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rnnjax.records import read_metrics  # noqa: E402

SWEEP = '''
from rnnjax.config import defaults
from rnnjax.sweep import sweep


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "{corpus}"
    c.model.cell = "{cell}"
    c.model.num_layers = 2
    c.model.hidden_size = {hidden}
    c.train.batch_size = 20
    c.train.seq_len = 20
    c.train.max_steps = {steps}
    c.train.log_every = 10
    c.eval.every_epochs = 100
    c.eval.batch_size = 10
    c.eval.seq_len = 100
    c.checkpoint.every_secs = 0
    c.sweep.vmap_axes = ("seed",)
    return c


def get_sweep():
    return sweep("config.seed", list(range({k})))
'''


def steady_rate(run_dir: Path, skip: int) -> float:
    rates = [r["tokens_per_s"] for r in read_metrics(run_dir / "metrics.jsonl")
             if r.get("split") == "train" and "tokens_per_s" in r][skip:]
    return statistics.median(rates)


def cpu_model() -> str:
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def measure(k: int, args: argparse.Namespace, tmp: Path) -> dict:
    spec = tmp / f"pop{k}.py"
    spec.write_text(SWEEP.format(k=k, cell=args.cell, hidden=args.hidden, corpus=args.corpus, steps=args.steps))
    names = [f"seed={i}" for i in range(k)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.time()
    cmd = [sys.executable, "-m", "rnnjax", "sweep", "--config", str(spec), "--workdir", str(tmp / f"pop{k}"),
           "--data-dir", args.data_dir]
    subprocess.run(cmd + [a for n in names for a in ("--population", n)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    pop_wall = time.time() - t0
    pop = sum(steady_rate(tmp / f"pop{k}" / n, args.skip) for n in names)
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "rnnjax", "train", "--config", str(spec), "--workdir",
                               str(tmp / f"sep{k}" / n), f"--config.seed={i}", "--data-dir", args.data_dir], env=env,
                              stdout=subprocess.DEVNULL)
             for i, n in enumerate(names)]
    if any(p.wait() for p in procs):
        raise SystemExit("a separate run failed")
    sep_wall = time.time() - t0
    sep = sum(steady_rate(tmp / f"sep{k}" / n, args.skip) for n in names)
    row = {"k": k, "population_tok_s": pop, "separate_tok_s": sep, "ratio": pop / sep,
           "population_wall_s": pop_wall, "separate_wall_s": sep_wall, "load": os.getloadavg()[0]}
    print(f"K={k:>2}: population {pop:>9,.0f} tok/s ({pop_wall:.0f} s), {k} processes {sep:>9,.0f} tok/s "
          f"({sep_wall:.0f} s), ratio {pop / sep:.2f}, load {row['load']:.1f}", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1,3,8,16")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--skip", type=int, default=3, help="train records left out at the start (warm-up)")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden", type=int, default=200)
    p.add_argument("--corpus", default="ptb", help="data.corpus (default: PTB words, vocabulary 10,000)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(int(k), args, Path(tmp)) for k in args.sizes.split(",")]
    if args.out:
        cores = sorted(os.sched_getaffinity(0))
        lines = [f"CPU: {cpu_model()}, {os.cpu_count()} cores, this run on core(s) {cores} "
                 f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); "
                 f"`{' '.join(sys.argv)}`; {args.cell} 2 x {args.hidden}, "
                 f"batch 20, BPTT 20, corpus {args.corpus}, {args.steps} steps per run; steady-state tokens/s "
                 f"summed over the K members / processes; load average when each row finished.", "",
                 "| K | population tok/s | K processes tok/s | ratio | population wall s | processes wall s | load |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['k']} | {r['population_tok_s']:,.0f} | {r['separate_tok_s']:,.0f} | {r['ratio']:.2f} | "
                  f"{r['population_wall_s']:.0f} | {r['separate_wall_s']:.0f} | {r['load']:.1f} |" for r in rows]
        args.out.write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
