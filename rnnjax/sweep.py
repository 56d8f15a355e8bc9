"""Sweeps: a grid of config points, one run directory each, every point a `rnnjax train` process.

A config file declares its grid beside `get_config()`, as big_vision and Flax examples do:

    from rnnjax.sweep import product, sweep, zipped

    def get_sweep():
        return product(
            sweep("config.model.cell", ["rnn_tanh", "gru", "lstm"]),
            sweep("config.model.num_layers", [1, 2]),
            zipped(sweep("config.model.dropout", [0.0, 0.5]), sweep("config.train.learning_rate", [1.0, 0.7])),
            sweep("config.seed", [0, 1, 2]),
        )

`rnnjax sweep --config FILE[:PRESET] --workdir DIR` runs each point as

    python -m rnnjax train --config FILE[:PRESET] --workdir DIR/NAME --config.KEY=VALUE ...

where NAME reads like `cell=gru,layers=2,dropout=0.5,seed=0` and depends only on the point.
A point whose `summary.json` exists is skipped; one that was interrupted is started again
with the same command (training resumes from its checkpoints); one that failed is left,
with its error in `DIR/NAME/status.json`, until `--retry-failed`. `--shard I/N` runs points
I, I+N, I+2N, ... so independent hosts can split a sweep with no coordinator; results
merge from the run directories (`rnnjax report DIR`).
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

from rnnjax import config as config_lib
from rnnjax.config import ConfigDict
from rnnjax.errors import ConfigError
from rnnjax.model import matched_hidden_size

Grid = list  # list[dict[str, Any]]: one dict of {"config.KEY": value} per point

PREFIX = "config."
# Short names used in run directory names; other keys go by their last component.
ALIASES = {
    "model.cell": "cell",
    "model.num_layers": "layers",
    "model.dropout": "dropout",
    "model.hidden_size": "hidden",
    "model.embed_size": "embed",
    "train.learning_rate": "lr",
    "train.optimizer": "opt",
    "train.batch_size": "batch",
    "train.seq_len": "bptt",
    "data.corpus": "corpus",
    "seed": "seed",
}


# ---- grid definitions (used inside config files) -------------------------------------------

def sweep(key: str, values) -> Grid:
    """One axis: `key` (written `config.model.cell`) takes each of `values` in turn."""
    if not isinstance(key, str) or not key.startswith(PREFIX):
        raise ConfigError(f"sweep key {key!r} must be written {PREFIX}KEY, e.g. 'config.model.cell'")
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ConfigError(f"sweep axis {key!r}: values must be a list, got {values!r}")
    values = list(values)
    if not values:
        raise ConfigError(f"sweep axis {key!r} is empty")
    return [{key: v} for v in values]


def _merge(points: tuple[dict, ...]) -> dict:
    out: dict = {}
    for p in points:
        for key in p:
            if key in out:
                raise ConfigError(f"sweep key {key!r} appears in more than one axis")
        out.update(p)
    return out


def product(*grids: Grid) -> Grid:
    """Every combination of the grids' points (the first grid varies slowest)."""
    return [_merge(combo) for combo in itertools.product(*grids)]


def zipped(*grids: Grid) -> Grid:
    """The grids' points side by side; all grids must have the same length."""
    lengths = [len(g) for g in grids]
    if len(set(lengths)) > 1:
        keys = [sorted(g[0]) for g in grids]
        raise ConfigError(f"zipped sweep axes have different lengths {lengths}: {keys}")
    return [_merge(combo) for combo in zip(*grids)]


# ---- expansion --------------------------------------------------------------------------

class Point(NamedTuple):
    index: int
    name: str  # run directory name, e.g. "cell=gru,layers=2,dropout=0.5,seed=0"
    values: dict  # {"model.cell": "gru", ...}: the swept values
    overrides: dict  # {"model.cell": "gru", "model.hidden_size": "173", ...}: --config.KEY=VALUE texts


def override_text(value: Any) -> str:
    """The `--config.KEY=VALUE` text that `config.apply_overrides` parses back into `value`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(tuple(value) if isinstance(value, list) else value)


def _name_value(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = "-".join(_name_value(v) for v in value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+\-]", "_", text)


def short_names(keys: list[str]) -> dict[str, str]:
    """{"model.cell": "cell", "train.weight_decay": "weight_decay", ...}; full keys where short ones clash."""
    short = {k: ALIASES.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def run_name(values: dict, names: dict[str, str]) -> str:
    return ",".join(f"{names[k]}={_name_value(v)}" for k, v in values.items())


def _import(path: Path):
    spec = importlib.util.spec_from_file_location(f"rnnjax_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_grid(config_spec: str) -> Grid:
    """The points `get_sweep()` of the config file returns, checked for shape."""
    path = Path(config_spec.partition(":")[0])
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    module = _import(path)
    if not hasattr(module, "get_sweep"):
        raise ConfigError(f"config file {str(path)!r} defines no get_sweep()")
    try:
        grid = module.get_sweep()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(grid, list) or not grid or not all(isinstance(p, dict) for p in grid):
        raise ConfigError(f"{path}: get_sweep() must return a non-empty list of points (use sweep/product/zipped)")
    return grid


def expand(base: ConfigDict, grid: Grid, overrides: dict[str, str], where: str = "sweep",
           vocab_size: Callable[[ConfigDict], int] | None = None) -> list[Point]:
    """One `Point` per grid entry, each checked by building and validating its config.

    `overrides` (from the command line) apply to every point and may not touch a swept key.
    With `sweep.match_params`, `vocab_size(config)` gives the vocabulary the parameter
    counts are computed for.
    """
    keys: list[str] = []
    for p in grid:
        for k in p:
            if k not in keys:
                keys.append(k)
    known = config_lib.flatten(base)
    for k in keys:
        if not k.startswith(PREFIX):
            raise ConfigError(f"{where}: sweep key {k!r} must be written {PREFIX}KEY")
        bare = k[len(PREFIX):]
        if bare not in known:
            close = difflib.get_close_matches(bare, sorted(known), n=1, cutoff=0.5)
            hint = f" (did you mean {PREFIX + close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown sweep key {k!r}{hint}")
        if bare in overrides:
            raise ConfigError(f"{where}: --config.{bare} overrides a swept key; change the sweep instead")
    names = short_names([k[len(PREFIX):] for k in keys])
    points, seen = [], {}
    for i, p in enumerate(grid):
        if list(p) != keys:
            missing = [k for k in keys if k not in p]
            raise ConfigError(f"{where}: point {i} lacks sweep keys {missing}; every point must set the same keys")
        values = {k[len(PREFIX):]: v for k, v in p.items()}
        point_overrides = {**overrides, **{k: override_text(v) for k, v in values.items()}}
        config = config_lib.apply_overrides(base, point_overrides)
        config_lib.validate(config)
        if config.sweep.match_params:
            hidden = matched_hidden_size(config, vocab_size(config))
            point_overrides["model.hidden_size"] = str(hidden)
        name = run_name(values, names)
        if name in seen:
            raise ConfigError(f"{where}: points {seen[name]} and {i} have the same run name {name!r}")
        seen[name] = i
        points.append(Point(i, name, values, point_overrides))
    return points


# ---- selection and state -----------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text or "")
    if not m or not int(m[1]) < int(m[2]):
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(m[1]), int(m[2])


def shard(points: list[Point], index: int, count: int) -> list[Point]:
    """Points index, index + count, ...: the shards of one sweep partition its points."""
    return points[index::count]
