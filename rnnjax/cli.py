"""The `rnnjax` command: train, eval, sample, sweep, report, data.

    rnnjax train [--config configs/ptb.py:small] [--workdir DIR] [--config.KEY=VALUE ...]
    rnnjax eval --workdir DIR [--split valid|test] [--checkpoint best|latest|STEP]
    rnnjax sample --workdir DIR --prime TEXT [--length N] [--temperature T] [--top-k K] [--top-p P] ...
    rnnjax data fetch CORPUS... [--data-dir D] [--mirror URL]
    rnnjax data stats CORPUS [--data-dir D] [--config.data.KEY=VALUE ...]
    rnnjax sweep --config FILE[:PRESET] --workdir DIR [--jobs N] [--shard I/N] [--dry-run] [--launcher slurm|ray ...]
    rnnjax sweep --config FILE[:PRESET] --workdir DIR --population NAME [--population NAME ...]   (in this process)
    rnnjax report DIR [--out OUT] [--target X] [--anchor SELECTOR=ANCHOR ...]
    rnnjax config show [--config FILE[:PRESET]] [--config.KEY=VALUE ...] | keys

`rnnjax train` with no arguments runs the quickstart (a generated corpus, no download)
in ./runs/quickstart; without --workdir a run goes to ./runs/NAME, named by its config
and overrides, so the same command again continues (or reports) the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from rnnjax import config as config_lib
from rnnjax import config_keys
from rnnjax import host_memory, rundir
from rnnjax.data import check_vocab, corpus_stats, fetch_corpus, load_corpus, resolve_data_dir, resolve_mirror
from rnnjax.errors import ConfigError, DataError, NonFiniteLoss, UserError

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


def _given_config(args: argparse.Namespace, workdir: Path, overrides: dict[str, str]) -> config_lib.ConfigDict | None:
    """The config `rnnjax train` was asked for; None to continue the run in `workdir` with its own."""
    if args.config:
        return config_lib.resolve(args.config, overrides)
    state = rundir.describe(workdir)
    if state == "new" or (args.restart and state == "foreign"):
        return config_lib.resolve(QUICKSTART, overrides)
    if args.restart:  # start the run in workdir over, with its own config
        config = config_lib.apply_overrides(rundir.saved_config(workdir), overrides)
        config_lib.validate(config)
        return config
    return None


def cmd_train(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import loop, parallel, tasks

    workdir = Path(args.workdir) if args.workdir else rundir.default_dir(args.config or QUICKSTART, overrides)
    given = _given_config(args, workdir, overrides)  # every config error is raised here, before any directory
    if parallel.initialize(args.coordinator, args.num_processes, args.process_id, args.distributed):
        if not args.workdir:
            raise ConfigError("a multi-process run needs --workdir, a directory every process can reach")
        if not parallel.is_main_process():
            sys.stdout = open(os.devnull, "w")  # only process 0 prints
    writer = parallel.is_main_process()
    try:
        if writer:
            run = rundir.open_run(workdir, given, overrides, restart=args.restart)
        parallel.sync("rnnjax: run directory opened")  # the others read what process 0 decided
        if not writer:
            run = rundir.open_run(workdir, given, overrides, writer=False)
    except rundir.Finished as e:
        print(e)
        return 0
    for change in run.safe_changes:
        print(f"continuing with changed {change}")
    print(f"run directory: {workdir} ({'new run' if run.state == 'new' else 'continuing the run it holds'})")
    try:
        tasks.run(run, resolve_data_dir(args.data_dir))
    except loop.Preempted as e:
        print(e)
        return 0
    except UserError:
        run.abandon()  # a run that failed before its first checkpoint leaves no directory it created
        raise
    except OSError as e:
        raise rundir.storage_error(e, workdir) from None
    finally:
        run.release()
    if run.config.task == "lm":
        print(f"next: rnnjax eval --workdir {workdir} [--split test --checkpoint best]; "
              f"rnnjax sample --workdir {workdir} --prime TEXT")
    return 0


def cmd_eval(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import checkpoint, steps
    from rnnjax.model import make_lm

    workdir, config = rundir.open_existing(Path(args.workdir))
    if config.task != "lm":
        raise DataError(f"{workdir}: a {config.task!r} run; rnnjax eval scores language models")
    corpus = load_corpus(config, resolve_data_dir(args.data_dir))
    check_vocab(rundir.read_vocab(workdir), corpus.vocab, workdir / rundir.VOCAB)
    lm = make_lm(config, corpus.vocab_size)
    params, step = checkpoint.restore_params(workdir, lm.init, args.checkpoint, config)
    nll = steps.evaluate(lm, steps.make_eval_step(lm), params, corpus.splits[args.split], config)
    print(json.dumps({"split": args.split, "checkpoint_step": step, "loss": nll, "perplexity": math.exp(nll),
                      "bpt": nll / math.log(2)}))
    return 0


def cmd_sample(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    import jax

    from rnnjax import checkpoint, sampling
    from rnnjax.model import make_lm

    if args.length < 1 or args.num_samples < 1:
        raise ConfigError("--length and --num-samples must be at least 1")
    workdir, config = rundir.open_existing(Path(args.workdir))
    if config.task != "lm":
        raise DataError(f"{workdir}: a {config.task!r} run; sampling needs a language model run")
    vocab = rundir.read_vocab(workdir)
    lm = make_lm(config, len(vocab))
    params, _ = checkpoint.restore_params(workdir, lm.init, args.checkpoint, config)
    s = sampling.Sampler(args.temperature, args.top_k, args.top_p, args.greedy)
    texts = sampling.sample_text(lm, params, vocab, sampling.token_level(vocab), args.prime, args.length,
                                 jax.random.key(args.seed), s, args.num_samples, args.oov)
    print("\n\n".join(texts))
    return 0


def cmd_data_fetch(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    for corpus in args.corpus:
        fetch_corpus(corpus, resolve_data_dir(args.data_dir), resolve_mirror(args.mirror))
    return 0


def cmd_data_stats(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    config = config_lib.apply_overrides(config_lib.defaults(), {"data.corpus": args.corpus, **overrides})
    print(json.dumps(corpus_stats(config, resolve_data_dir(args.data_dir)), ensure_ascii=False))
    return 0


def cmd_sweep(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import launch, population, ray_launcher, report, slurm, sweep

    spec = config_lib.shipped_config_path(args.config)
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs}: expected at least 1")
    points = sweep.expand(config_lib.load(spec), sweep.load_grid(spec), overrides, where=spec.partition(":")[0],
                          vocab_size=launch.corpus_vocab_size(args.data_dir))
    selected = sweep.shard(points, *sweep.parse_shard(args.shard)) if args.shard else points
    workdir = Path(args.workdir)
    if args.population:
        return _train_population(spec, workdir, points, args.population, args.data_dir)
    vmap_axes = tuple(config_lib.apply_overrides(config_lib.load(spec), overrides).sweep.vmap_axes)
    resources = slurm.Resources(args.partition, args.time_min, args.cpus_per_point, args.gpus_per_point, args.mem_gb)
    ray_resources = ray_launcher.Resources(args.cpus_per_point, args.gpus_per_point)
    if args.launcher == "ray" and args.jobs != 1:
        raise ConfigError("--jobs: with --launcher ray the cluster's free CPUs and GPUs decide how many points run "
                          "at once (--cpus-per-point, --gpus-per-point)")
    if args.dry_run:
        for p in selected:
            hidden = f" (hidden {p.overrides['model.hidden_size']})" if "model.hidden_size" in p.overrides else ""
            print(f"{p.index:>4}  {launch.point_status(workdir / p.name):<11}  {workdir / p.name}{hidden}")
        print(f"{len(selected)} of {len(points)} points")
        todo = launch.points_to_run(workdir, selected, args.retry_failed)
        tasks = len(population.groups(todo, vmap_axes)) if vmap_axes else len(todo)
        if vmap_axes and todo:
            print(f"{len(todo)} points to run as {tasks} populations ({', '.join(vmap_axes)})")
        if args.launcher == "slurm" and todo:
            print(f"would submit {tasks} array tasks as one array job: {resources.describe(tasks, args.jobs)}")
        if args.launcher == "ray" and todo:
            print(f"would submit {ray_resources.describe(tasks)}")
        return 0
    address = ray_launcher.cluster_address(args.ray_address) if args.launcher == "ray" else None
    launch.record_sweep(workdir, spec, overrides, points)
    if args.launcher == "slurm":
        executor = slurm.executor(workdir, resources, args.jobs)
        slurm.submit(executor, spec, workdir, selected, retry_failed=args.retry_failed, data_dir=args.data_dir,
                     vmap_axes=vmap_axes, overrides=overrides)
        return 0
    if args.launcher == "ray":
        failed = ray_launcher.run_sweep(address, spec, workdir, selected, ray_resources,
                                        retry_failed=args.retry_failed, data_dir=args.data_dir, vmap_axes=vmap_axes,
                                        overrides=overrides)
    else:
        failed = launch.run_sweep(spec, workdir, selected, jobs=args.jobs, retry_failed=args.retry_failed,
                                  data_dir=args.data_dir, vmap_axes=vmap_axes, overrides=overrides)
    for path in report.write_report(workdir):
        print(f"wrote {path}")
    return 1 if failed else 0


def _train_population(spec: str, workdir: Path, points: list, names: list[str], data_dir: str | None) -> int:
    """Train the named sweep points as one population (`rnnjax.population`); 3 if a member failed."""
    from rnnjax import loop, population, tasks

    by_name = {p.name: p for p in points}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ConfigError(f"--population: no point of this sweep is named {unknown[0]!r}")
    configs = {n: config_lib.resolve(spec, by_name[n].overrides) for n in names}  # every error before any directory
    data = resolve_data_dir(data_dir)
    runs = []
    try:
        for n in names:
            try:
                runs.append(rundir.open_run(workdir / n, configs[n], by_name[n].overrides))
            except rundir.Finished as e:
                print(f"[{n}] {e}")
        if not runs:
            return 0
        summaries = population.train(runs, lambda run, log: tasks.TASKS[run.config.task](run.config, run, data, log))
    except loop.Preempted as e:
        print(e)
        return 0
    except UserError:
        for run in runs:
            run.abandon()
        raise
    except OSError as e:
        raise rundir.storage_error(e, workdir) from None
    finally:
        for run in runs:
            run.release()
    return 0 if len(summaries) == len(runs) else NonFiniteLoss.exit_code


def cmd_report(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    from rnnjax import report

    workdir, out = Path(args.workdir), Path(args.out) if args.out else None
    if report.is_run_dir(workdir):
        if args.target is not None or args.anchor:
            raise ConfigError(f"{workdir} is one run's directory; --target and --anchor compare the runs of a "
                              f"sweep directory")
        summary, written = report.report_run(workdir, out)
        print(json.dumps(summary, indent=2) if summary else f"{workdir}: unfinished (no summary.json yet)")
    else:
        written = report.write_report(workdir, out, target=args.target, anchor_flags=args.anchor)
        print(written[1].read_text())  # results.md, the tables and findings
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_config_show(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    print(config_lib.resolve(args.config or QUICKSTART, overrides).to_json(indent=2))
    return 0


def cmd_config_keys(args: argparse.Namespace, overrides: dict[str, str]) -> int:
    print(config_keys.keys_markdown(), end="")
    return 0


def _configs_help() -> str:
    """The epilog of `rnnjax train --help`: how to set keys, and every shipped config with its presets."""
    names = [n for n in config_lib.shipped_config_names() if not n.startswith("sweeps/")]
    shown = [n + (":" + "|".join(p) if (p := config_lib.presets(n)) else "") for n in names]
    return ("--config.KEY=VALUE sets one config key (`rnnjax config keys` lists them, `rnnjax config show` prints "
            "the resolved config).\nshipped configs (--config NAME[:PRESET]): " + ", ".join(shown))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnjax", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model; with no flags, the quickstart", epilog=_configs_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="config file[:preset], e.g. configs/ptb.py:small (default: quickstart, "
                   "or the run's saved config when --workdir holds checkpoints to resume from)")
    p.add_argument("--workdir", help="run directory (default: ./runs/NAME from the config and overrides); "
                   "a directory holding a run continues it")
    p.add_argument("--restart", action="store_true",
                   help="move the run directory's earlier files aside to DIR.old-STAMP and start over")
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
    p.add_argument("--launcher", default="local", choices=["local", "slurm", "ray"],
                   help="local: processes on this machine (default); slurm: one SLURM array job through submitit; "
                   "ray: one task per point on a running Ray cluster")
    p.add_argument("--partition", help="slurm: partition")
    p.add_argument("--time-min", type=int, default=240, help="slurm: time limit per array task, minutes (a point "
                   "that needs longer is checkpointed and requeued)")
    p.add_argument("--cpus-per-point", type=int, default=2, help="slurm, ray: CPUs per point")
    p.add_argument("--gpus-per-point", type=int, default=0, help="slurm, ray: GPUs per point (ray: 0 hides the "
                   "node's GPUs from the point)")
    p.add_argument("--mem-gb", type=float, help="slurm: memory per point, GB")
    p.add_argument("--ray-address", help="ray: the cluster, HOST:PORT of its head (default: $RAY_ADDRESS)")
    p.add_argument("--population", metavar="NAME", action="append", help="repeated: train these points as one "
                   "vmapped population in this process (what the local launcher runs for each group of "
                   "sweep.vmap_axes)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("report", help="tables and plots for the runs of a sweep directory; a run directory's "
                       "summary and curves")
    p.add_argument("workdir", help="sweep directory, or one run's directory")
    p.add_argument("--out", help="where to write results.* and the plots (default: the sweep directory)")
    p.add_argument("--target", type=float, help="validation perplexity (word corpora) or bits per character (char "
                   "corpora) for time to target (default: the highest best-validation value of any finished run)")
    p.add_argument("--anchor", action="append", default=[], metavar="SELECTOR=ANCHOR",
                   help="compare the groups matching SELECTOR (e.g. cell=lstm) with a published result of "
                   "rnnjax.anchors.REGISTRY, e.g. cell=lstm=zaremba_small; repeatable")
    p.set_defaults(func=cmd_report)
    config_sub = sub.add_parser("config", help="print the resolved config, or every key").add_subparsers(
        dest="config_command", required=True)
    p = config_sub.add_parser("show", help="the resolved config as JSON (the form of a run's config.json)")
    p.add_argument("--config", help="config file[:preset] (default: quickstart)")
    p.set_defaults(func=cmd_config_show)
    p = config_sub.add_parser("keys", help="every config key with its default and meaning (Markdown)")
    p.set_defaults(func=cmd_config_keys)
    data_sub = sub.add_parser("data", help="fetch corpora; print their statistics").add_subparsers(
        dest="data_command", required=True)
    p = data_sub.add_parser("fetch", help="download, verify (SHA-256) and store corpora in the data directory")
    p.add_argument("corpus", nargs="+", help="e.g. ptb tinyshakespeare (see rnnjax.data.corpora.REGISTRY)")
    p.add_argument("--data-dir", help="corpus directory (default: $RNNJAX_DATA_DIR or ~/.cache/rnnjax/data)")
    p.add_argument("--mirror", help="base URL holding the data-directory layout (default: $RNNJAX_DATA_MIRROR)")
    p.set_defaults(func=cmd_data_fetch)
    p = data_sub.add_parser("stats", help="print one JSON object: tokens per split, vocabulary, files, checksums")
    p.add_argument("corpus", help="a data.corpus value, e.g. ptb, text:notes.txt; --config.data.KEY=VALUE apply")
    p.add_argument("--data-dir")
    p.set_defaults(func=cmd_data_stats)
    return parser


# Commands that read --config.KEY=VALUE overrides; the others refuse them rather than ignore them.
TAKES_OVERRIDES = (cmd_train, cmd_sweep, cmd_data_stats, cmd_config_show)


def main(argv: list[str] | None = None) -> int:
    host_memory.tune()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = _split_overrides(extra, parser)
    if overrides and args.func not in TAKES_OVERRIDES:
        parser.error(f"{args.command} takes no --config.KEY=VALUE overrides (got --config.{next(iter(overrides))})")
    try:
        return args.func(args, overrides)
    except UserError as e:
        print(f"rnnjax: error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `rnnjax config keys | head`: the reader has gone; nothing of ours failed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:
        print("rnnjax: error: out of host memory; the model or batch is too large for this machine "
              "(model.hidden_size, train.batch_size, vocabulary)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
