"""Training checkpoints under `DIR/checkpoints/` (Orbax), and what resuming needs from them.

Each save is one step directory, written asynchronously by an Orbax `CheckpointManager`:

    params/   model parameters (StandardSave); all that eval and sampling read
    train/    optimizer state, step, carried RNN state, the step RNG key (StandardSave)
    meta/     JSON: resolved config, vocabulary, data position, validation history,
              how many metrics.jsonl records precede the save, learning-rate scale,
              the params item's format (`PARAMS_FORMAT`)
    metrics/  {NAME: value} on saves that follow an evaluation: the task's best-selection metric
              (the language model's "valid_ppl", lowest best; sentiment's "valid_accuracy", highest)

A step saved before `params_format` existed (format 1) holds a language model's untied
decoder weight as [H, V]; it restores transposed into today's [V, H], so runs started then
resume and evaluate unchanged.

Orbax writes a step into a temporary directory and renames it when complete, so a kill
mid-save leaves no step directory (the temporary one is removed on the next start). A
step directory with truncated or unparseable files fails to restore: it is moved to
`DIR/checkpoints-corrupt/` with a warning naming the step, and the next older one is used.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from rnnjax import parallel
from rnnjax.config import ConfigDict, defaults
from rnnjax.errors import DataError

CHECKPOINTS = "checkpoints"
CORRUPT = "checkpoints-corrupt"
# The small JSON files of a step directory; each must parse for the step to be considered.
_JSON_FILES = ("_CHECKPOINT_METADATA", "meta/metadata", "metrics/metrics", "params/_METADATA", "train/_METADATA")


# The layout of a step's params item, saved in its meta as "params_format". 2: the language
# model's untied decoder weight `decoder.w` is [V, H]; 1 (no "params_format"): it is [H, V],
# and so are the optimizer's moments of it in the train item.
PARAMS_FORMAT = 2


def _is_decoder_w(path: tuple) -> bool:
    """Whether a key path ends in `decoder`, `w`: the LM's decoder weight, in the params or in an
    optimizer state that mirrors them (Adam's mu and nu)."""
    return [getattr(k, "key", None) for k in path[-2:]] == ["decoder", "w"]


def _as_saved(target: Any, meta: dict) -> tuple[Any, Callable[[Any], Any]]:
    """The restore target (params and/or train items, any pytree of them) for a step with `meta`,
    shaped as that step saved it, and the function that turns what it restores into `target`'s
    layout."""
    saved = meta.get("params_format", 1)
    if saved > PARAMS_FORMAT:
        raise DataError(f"checkpoint at step {meta.get('step')} has params_format {saved}, written by a newer "
                        f"rnnjax (this one reads up to {PARAMS_FORMAT}); upgrade rnnjax to read it")
    if saved == PARAMS_FORMAT:
        return target, lambda tree: tree

    def as_format_1(path, x):
        if not _is_decoder_w(path):
            return x
        return jax.ShapeDtypeStruct(x.shape[::-1], x.dtype, sharding=getattr(x, "sharding", None))

    def upgrade(tree):
        return jax.tree_util.tree_map_with_path(lambda path, x: x.T if _is_decoder_w(path) else x, tree)

    return jax.tree_util.tree_map_with_path(as_format_1, target), upgrade


class Restored(NamedTuple):
    step: int
    params: Any
    train: dict  # {"opt_state", "step", "carry", "rng"}: what `train_items` saved
    meta: dict


LM_BEST = ("valid_ppl", "min")


def _options(c: ConfigDict, read_only: bool, best: tuple[str, str]) -> ocp.CheckpointManagerOptions:
    """Keep the newest `keep` and the `keep_best` best saves by `best` = (metric, "min" | "max");
    read-only: touch nothing."""
    name, mode = best

    def value(metrics: dict) -> float:
        return metrics[name]

    keep = [policies.LatestN(None if read_only else c.keep)]
    if c.keep_best and not read_only:
        keep.append(policies.BestN(get_metric_fn=value, reverse=mode == "min", n=c.keep_best,
                                   keep_checkpoints_without_metrics=False))
    # `due()` asks this policy: a save once `every_secs` passed since the last (the loop's own
    # saves at epoch ends, evaluations and stops are forced).
    every = [policies.ContinuousCheckpointingPolicy(minimum_interval_secs=c.every_secs)] if c.every_secs else []
    return ocp.CheckpointManagerOptions(
        best_fn=value, best_mode=mode, create=not read_only, cleanup_tmp_directories=not read_only,
        preservation_policy=policies.AnyPreservationPolicy(keep), enable_async_checkpointing=True,
        save_decision_policy=policies.AnySavePolicy(every),
    )


def _expected_warning(record: logging.LogRecord) -> bool:
    """Orbax warns on every save without metrics; ours lack them unless a validation pass preceded."""
    return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_expected_warning)


def _step_dirs(root: Path) -> list[int]:
    return sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()) if root.is_dir() else []


def _json_problem(step_dir: Path) -> str | None:
    """Why a step directory's small JSON files do not parse, or None."""
    for name in _JSON_FILES:
        path = step_dir / name
        if name == "metrics/metrics" and not path.parent.exists():
            continue
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as e:
            return f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


class _DropLateReads:
    """An unraisable hook that drops the reads TensorStore finishes after Orbax gave up on a
    damaged checkpoint, and passes everything else to the hook it replaced.

    Orbax runs a restore on a fresh asyncio loop and closes it as soon as one array fails;
    TensorStore then completes the other reads and posts each to that closed loop, which
    Python would print as an "Exception ignored ... Event loop is closed" traceback per array.
    They carry nothing: the restore has already failed and been reported in one line.
    """

    def __init__(self, previous: Callable[[Any], None]):
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        e = unraisable.exc_value
        if not (unraisable.object is None and isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
            self.previous(unraisable)


def _quiet_late_reads() -> None:
    """Install `_DropLateReads` (once) after a restore failed."""
    if not isinstance(sys.unraisablehook, _DropLateReads):
        sys.unraisablehook = _DropLateReads(sys.unraisablehook)


def _why(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


def has_checkpoints(workdir: Path) -> bool:
    return bool(_step_dirs(Path(workdir) / CHECKPOINTS))


def saved_steps(workdir: Path) -> list[int]:
    """Steps of the complete checkpoints in `workdir` (Orbax renames a step into place only once written)."""
    return _step_dirs(Path(workdir) / CHECKPOINTS)


def newest_config(workdir: Path) -> dict | None:
    """The config saved in the newest checkpoint whose meta parses (no array is read), or None."""
    root = Path(workdir) / CHECKPOINTS
    for step in reversed(_step_dirs(root)):
        try:
            return json.loads((root / str(step) / "meta" / "metadata").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


class Checkpoints:
    """The checkpoints of one run directory: save, restore the newest good one, pick best/latest."""

    def __init__(self, workdir: Path, config: ConfigDict, log: Callable[[str], None] = print,
                 read_only: bool = False, best: tuple[str, str] = LM_BEST):
        self.workdir = Path(workdir)
        self.best = best
        self.root = (self.workdir / CHECKPOINTS).absolute()
        self.log = log
        self.every_secs = config.checkpoint.every_secs
        bad = {s: why for s in _step_dirs(self.root) if (why := _json_problem(self.root / str(s)))}
        if bad and not read_only:
            if len(bad) == len(_step_dirs(self.root)):
                self._refuse(bad)
            self._set_aside(bad)
        self._mngr = ocp.CheckpointManager(self.root, options=_options(config.checkpoint, read_only, best))

    def _refuse(self, bad: dict[int, str]) -> None:
        steps = ", ".join(f"{s} ({why})" for s, why in sorted(bad.items()))
        raise DataError(f"{self.root}: no usable checkpoint; unreadable steps: {steps}. "
                        f"Move the directory away to start the run over")

    def _set_aside(self, bad: dict[int, str]) -> None:
        dest = self.workdir / CORRUPT
        dest.mkdir(exist_ok=True)
        for step, why in sorted(bad.items()):
            self.log(f"warning: checkpoint at step {step} is incomplete or corrupt ({why}); "
                     f"moved to {dest / str(step)}")
            target = dest / str(step)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(self.root / str(step)), target)

    def steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def due(self, step: int) -> bool:
        """Whether `checkpoint.every_secs` asks for a save at `step` (never while one is being written)."""
        return self.every_secs > 0 and self._mngr.should_save(step)

    def save(self, step: int, params: Any, train: dict, meta: dict, value: float | None = None) -> None:
        """Start an asynchronous save of step `step` (a step already saved is left as it is);
        `value`: the best-selection metric, when an evaluation preceded the save."""
        if step in self._mngr.all_steps():
            return
        self._mngr.save(
            step,
            args=ocp.args.Composite(params=ocp.args.StandardSave(params), train=ocp.args.StandardSave(train),
                                    meta=ocp.args.JsonSave({**meta, "params_format": PARAMS_FORMAT})),
            metrics=None if value is None else {self.best[0]: value},
            force=True,
        )

    def _restore(self, step: int, params: Any, train: dict, meta: dict) -> Restored:
        out = self._mngr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(params), train=ocp.args.StandardRestore(train)))
        if meta["step"] != step or int(out["train"]["step"]) != step:
            raise ValueError(f"step mismatch inside checkpoint {step}")
        return Restored(step, out["params"], out["train"], meta)

    def meta(self, step: int) -> dict:
        return self._mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def restore_latest(self, params: Any, train: dict, check: Callable[[dict], None] = lambda meta: None,
                       up_to: int | None = None) -> Restored | None:
        """The newest checkpoint (at step `up_to` or before, when given) that restores, shaped and
        placed like `params` / `train`.

        `check(meta)` runs before any array is read and may refuse the resume (its error
        propagates). Newer checkpoints that fail to read are moved aside with a warning;
        None when there are none at all; a DataError when there are some but none
        restores (never a silent restart).
        """
        self._mngr.wait_until_finished()
        bad = {}
        for step in sorted(self._mngr.all_steps(), reverse=True):
            if up_to is not None and step > up_to:
                continue
            try:
                meta = self.meta(step)
            except Exception as e:  # Orbax/TensorStore raise many types for damaged files
                bad[step] = _why(e)
                continue
            if meta.get("imported"):
                raise DataError(f"{self.workdir}: holds imported weights without optimizer state "
                                f"(interop.write_lm_run): rnnjax eval and rnnjax sample read it, training cannot "
                                f"continue it")
            check(meta)
            saved, upgrade = _as_saved((params, train), meta)  # a newer format is refused, not set aside
            try:
                restored = self._restore(step, *saved, meta)
            except Exception as e:
                _quiet_late_reads()
                bad[step] = _why(e)
                continue
            if bad:
                self._set_aside(bad)
                self._mngr.reload()
            params_now, train_now = upgrade((restored.params, restored.train))
            return restored._replace(params=params_now, train=train_now)
        if bad:
            self._refuse(bad)
        return None

    def select(self, which: str) -> int:
        """Step named by `latest`, `best` (by the best-selection metric) or a number."""
        steps = self.steps()
        if not steps:
            raise DataError(f"{self.root}: no checkpoint")
        if which == "latest":
            return steps[-1]
        if which == "best":
            best = self._mngr.best_step()
            if best is None or self._mngr.metrics(best) is None:
                raise DataError(f"{self.root}: no checkpoint with a {self.best[0]}; use --checkpoint latest")
            return best
        if not which.isdigit() or int(which) not in steps:
            raise DataError(f"--checkpoint {which!r}: expected best, latest or one of the saved steps "
                            f"{', '.join(map(str, steps))}")
        return int(which)

    def restore_params(self, step: int, params: Any) -> tuple[Any, dict]:
        """Parameters and meta of `step`, without the optimizer state."""
        meta = self.meta(step)
        saved, upgrade = _as_saved(params, meta)
        out = self._mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(saved)))
        return upgrade(out["params"]), meta

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train_items(state: Any, rng: jax.Array) -> dict:
    """What a checkpoint's `train/` item holds, from a TrainState and the step key."""
    return {"opt_state": state.opt_state, "step": state.step, "carry": state.carry, "rng": jax.random.key_data(rng)}


def restore_params(workdir: Path, init: Callable[[jax.Array], Any], which: str = "latest",
                   config: ConfigDict | None = None, best: tuple[str, str] = LM_BEST) -> tuple[Any, int]:
    """Parameters of the checkpoint named by `which` (best, latest or a step), shaped like `init(key)`,
    and that checkpoint's step."""
    workdir = Path(workdir)
    if not has_checkpoints(workdir):
        raise DataError(f"{workdir}: no checkpoint under {workdir / CHECKPOINTS}")
    with Checkpoints(workdir, config if config is not None else defaults(), read_only=True, best=best) as ckpts:
        step = ckpts.select(which)
        target = parallel.on_one_device(jax.eval_shape(init, jax.random.key(0)))
        try:
            params, _ = ckpts.restore_params(step, target)
        except DataError:
            raise
        except Exception as e:  # Orbax/TensorStore raise many types for damaged files
            _quiet_late_reads()
            raise DataError(f"{ckpts.root / str(step)}: checkpoint at step {step} cannot be read ({_why(e)}); "
                            f"pick another with --checkpoint STEP") from None
    return params, step
