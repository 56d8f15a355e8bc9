"""The `rnnjax` command: train, eval, sample, sweep, report, data.

    rnnjax train [--config configs/ptb.py:small] [--workdir DIR] [--config.KEY=VALUE ...]
    rnnjax eval --workdir DIR [--split valid|test] [--checkpoint best|latest|STEP]
    rnnjax sample --workdir DIR --prime TEXT [--length N] [--temperature T] [--top-k K] [--top-p P] ...
    rnnjax data fetch CORPUS... [--data-dir D] [--mirror URL]
    rnnjax data stats CORPUS [--data-dir D] [--config.data.KEY=VALUE ...]
    rnnjax sweep --config FILE[:PRESET] --workdir DIR [--jobs N] [--shard I/N] [--dry-run]
    rnnjax report DIR

`rnnjax train` with no arguments runs the quickstart (a generated corpus, no download)
into a fresh directory under ./runs and says where.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
from pathlib import Path

from rnnjax import config as config_lib
from rnnjax import host_memory
from rnnjax.data import DataError, check_vocab, load_corpus, resolve_data_dir

QUICKSTART = "quickstart"


def _split_overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    """`--config.train.max_steps=100` or `--config.train.max_steps 100` -> {'train.max_steps': '100'}."""
    overrides, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--config."):
            parser.error(f"unrecognized argument {arg!r}")
        key, eq, value = arg[len("--config."):].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{arg} needs a value")
            value, i = extra[i + 1], i + 1
        overrides[key] = value
        i += 1
    return overrides


def _config_path(spec: str) -> str:
    """`quickstart` or `ptb:small` name a shipped config; anything else is a path."""
    return config_lib.shipped_config_path(spec)


def resolve_config(spec: str, overrides: dict[str, str]) -> config_lib.ConfigDict:
    config = config_lib.apply_overrides(config_lib.load(_config_path(spec)), overrides)
    config_lib.validate(config)
    return config


def cmd_train(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import checkpoint, parallel, train

    resuming = args.workdir is not None and checkpoint.has_checkpoints(Path(args.workdir))
    if args.config is None and resuming and (Path(args.workdir) / "config.json").is_file():
        config = config_lib.apply_overrides(config_lib.from_json(Path(args.workdir) / "config.json"), overrides)
        config_lib.validate(config)
    else:
        config = resolve_config(args.config or QUICKSTART, overrides)
    if parallel.initialize(args.coordinator, args.num_processes, args.process_id, args.distributed):
        if not args.workdir:
            raise config_lib.ConfigError("a multi-process run needs --workdir, a directory every process can reach")
        if not parallel.is_main_process():
            sys.stdout = open(os.devnull, "w")  # only process 0 prints
    if args.workdir:
        workdir = Path(args.workdir)
    else:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = Path("runs") / f"{Path((args.config or QUICKSTART).partition(':')[0]).stem}-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"run directory: {workdir}")
    if config.task != "lm":
        from rnnjax import tasks

        tasks.run(config, workdir, resolve_data_dir(args.data_dir))
        return 0
    corpus = load_corpus(config, resolve_data_dir(args.data_dir))
    try:
        summary = train.train(config, corpus, workdir)  # writes config.json and vocab.json once resuming is checked
    except train.Preempted as e:
        print(e)
        return 0
    print(f"valid ppl {summary['valid_ppl']:.3f}, test ppl {summary['test_ppl']:.3f} "
          f"({summary['steps']:,} steps, {summary['tokens_per_s']:,.0f} tokens/s, {summary['wall_s']:.0f} s)")
    if summary["floor_ppl"] is not None:
        gap = summary["valid_ppl"] / summary["floor_ppl"] - 1
        print(f"source floor ppl {summary['floor_ppl']:.3f}: valid ppl is {100 * gap:.1f}% above it")
    print(f"wrote {workdir / 'summary.json'}")
    return 0


def cmd_eval(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import checkpoint, train
    from rnnjax.model import make_lm

    workdir = Path(args.workdir)
    if not (workdir / "config.json").is_file():
        raise DataError(f"{workdir}: no config.json; is this a run directory?")
    config = config_lib.from_json(workdir / "config.json")
    corpus = load_corpus(config, resolve_data_dir(args.data_dir))
    check_vocab(workdir / "vocab.json", corpus.vocab)
    lm = make_lm(config, corpus.vocab_size)
    params = checkpoint.restore_params(workdir, lm.init, args.checkpoint, config)
    nll = train.evaluate(lm, train.make_eval_step(lm), params, corpus.splits[args.split], config)
    print(json.dumps({"split": args.split, "loss": nll, "perplexity": math.exp(nll), "bpt": nll / math.log(2)}))
    return 0


def cmd_sample(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    import jax

    from rnnjax import sampling

    if args.length < 1 or args.num_samples < 1:
        raise config_lib.ConfigError("--length and --num-samples must be at least 1")
    _, vocab, lm, params = sampling.load_run(Path(args.workdir), args.checkpoint)
    s = sampling.Sampler(args.temperature, args.top_k, args.top_p, args.greedy)
    texts = sampling.sample_text(lm, params, vocab, sampling.token_level(vocab), args.prime, args.length,
                                 jax.random.key(args.seed), s, args.num_samples, args.oov)
    print("\n\n".join(texts))
    return 0


def cmd_data_fetch(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import fetch

    for corpus in args.corpus:
        fetch.fetch(corpus, resolve_data_dir(args.data_dir), fetch.resolve_mirror(args.mirror))
    return 0


def cmd_data_stats(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax.data import corpus_stats

    config = config_lib.apply_overrides(config_lib.defaults(), {"data.corpus": args.corpus, **overrides})
    print(json.dumps(corpus_stats(config, resolve_data_dir(args.data_dir)), ensure_ascii=False))
    return 0


def cmd_sweep(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import report, sweep

    spec = _config_path(args.config)
    if args.jobs < 1:
        raise config_lib.ConfigError(f"--jobs {args.jobs}: expected at least 1")
    points = sweep.expand(config_lib.load(spec), sweep.load_grid(spec), overrides, where=spec.partition(":")[0],
                          vocab_size=sweep.corpus_vocab_size(args.data_dir))
    selected = sweep.shard(points, *sweep.parse_shard(args.shard)) if args.shard else points
    workdir = Path(args.workdir)
    if args.dry_run:
        for p in selected:
            hidden = f" (hidden {p.overrides['model.hidden_size']})" if "model.hidden_size" in p.overrides else ""
            print(f"{p.index:>4}  {sweep.point_status(workdir / p.name):<11}  {workdir / p.name}{hidden}")
        print(f"{len(selected)} of {len(points)} points")
        return 0
    sweep.write_sweep_file(workdir, spec, overrides, points)
    failed = sweep.run_sweep(spec, workdir, selected, jobs=args.jobs, retry_failed=args.retry_failed,
                             data_dir=args.data_dir)
    for path in report.write_report(workdir):
        print(f"wrote {path}")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import report

    for path in report.write_report(Path(args.workdir), Path(args.out) if args.out else None):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnjax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model; with no flags, the quickstart")
    p.add_argument("--config", help="config file[:preset], e.g. configs/ptb.py:small (default: quickstart, "
                   "or the run's saved config when --workdir holds checkpoints to resume from)")
    p.add_argument("--workdir", help="run directory (default: a fresh one under ./runs)")
    p.add_argument("--data-dir", help="corpus directory (default: $RNNJAX_DATA_DIR or ~/.cache/rnnjax/data)")
    p.add_argument("--coordinator", help="multi-host: HOST:PORT of process 0 (jax.distributed.initialize)")
    p.add_argument("--num-processes", type=int, help="multi-host: number of processes")
    p.add_argument("--process-id", type=int, help="multi-host: this process's index, 0 .. N-1")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: let JAX detect the cluster (SLURM, Open MPI, Cloud TPU); implied under srun/mpirun")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("eval", help="evaluate a trained run")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test", choices=["valid", "test"])
    p.add_argument("--checkpoint", default="latest", help="best (lowest valid perplexity) | latest | STEP")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("sample", help="generate text from a trained language model")
    p.add_argument("--workdir", required=True)
    p.add_argument("--checkpoint", default="latest", help="best | latest | STEP")
    p.add_argument("--prime", required=True, help="text the model reads before generating")
    p.add_argument("--length", type=int, default=200, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="keep the K most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set with this mass (1: all)")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--oov", default="error", choices=["error", "unk"],
                   help="prime tokens outside the vocabulary: an error, or <unk> where the vocabulary has it")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("sweep", help="run every point of a config file's get_sweep() grid, one run directory each")
    p.add_argument("--config", required=True, help="config file[:preset] that defines get_sweep()")
    p.add_argument("--workdir", required=True, help="sweep directory; each point runs in DIR/NAME")
    p.add_argument("--data-dir")
    p.add_argument("--jobs", type=int, default=1, help="points run at once, each in its own process")
    p.add_argument("--shard", help="I/N: run points I, I+N, I+2N, ... (0 <= I < N)")
    p.add_argument("--retry-failed", action="store_true", help="rerun points that failed before")
    p.add_argument("--dry-run", action="store_true", help="list the points, their directories and states; run nothing")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("report", help="tables and plots for the runs of a sweep directory")
    p.add_argument("workdir", help="sweep directory")
    p.add_argument("--out", help="where to write results.* and the plots (default: the sweep directory)")
    p.set_defaults(func=cmd_report)
    data_sub = sub.add_parser("data", help="fetch corpora; print their statistics").add_subparsers(
        dest="data_command", required=True)
    p = data_sub.add_parser("fetch", help="download, verify (SHA-256) and store corpora in the data directory")
    p.add_argument("corpus", nargs="+", help="e.g. ptb tinyshakespeare (see rnnjax.fetch.REGISTRY)")
    p.add_argument("--data-dir", help="corpus directory (default: $RNNJAX_DATA_DIR or ~/.cache/rnnjax/data)")
    p.add_argument("--mirror", help="base URL holding the data-directory layout (default: $RNNJAX_DATA_MIRROR)")
    p.set_defaults(func=cmd_data_fetch)
    p = data_sub.add_parser("stats", help="print one JSON object: tokens per split, vocabulary, files, checksums")
    p.add_argument("corpus", help="a data.corpus value, e.g. ptb, text:notes.txt; --config.data.KEY=VALUE apply")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    host_memory.tune()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = _split_overrides(extra, parser)
    try:
        return args.func(args, overrides)
    except (config_lib.ConfigError, DataError) as e:
        print(f"rnnjax: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if type(e).__name__ != "NonFiniteLoss":
            raise
        print(f"rnnjax: error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
