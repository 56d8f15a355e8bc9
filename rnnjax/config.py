"""Config files (`configs/NAME.py[:PRESET]`), `--config.KEY=VALUE` overrides, and checks.

A config file defines `get_config(preset: str | None = None) -> ml_collections.ConfigDict`,
in the style of Flax examples and big_vision. `defaults()` holds every key a run reads;
config files start from it and change values, so the key set is the same everywhere.
"""

from __future__ import annotations

import difflib
import importlib.resources
import importlib.util
import json
import traceback
from pathlib import Path
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from rnnjax import cells
from rnnjax.config_keys import KEYS, RESUME_SAFE, TASKS  # noqa: F401  (TASKS: re-exported for rnnjax.tasks)
from rnnjax.errors import ConfigError

ConfigDict = ml_collections.ConfigDict


def defaults() -> ConfigDict:
    """Every key a training run reads, with its default value (the table in `config_keys`)."""
    c = ConfigDict()
    for key in KEYS:
        *sections, leaf = key.name.split(".")
        node = c
        for section in sections:
            if section not in node:
                node[section] = ConfigDict()
            node = node[section]
        node[leaf] = key.default
    return c


def _shipped_configs() -> Path:
    """The directory of the shipped config files (the repository's configs/).

    Installed, editable or not, it is the package rnnjax.configs (pyproject.toml maps configs/ there);
    a source checkout used without installing (PYTHONPATH=.) has no rnnjax.configs, so there it is
    configs/ beside the rnnjax directory.
    """
    try:
        return Path(importlib.resources.files("rnnjax.configs"))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


def shipped_config_names() -> list[str]:
    """The names `--config` accepts for shipped configs: 'charrnn', ..., 'sweeps/quick'."""
    root = _shipped_configs()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.py")
                  if p.name != "__init__.py")


def _module(path: Path, name: str):
    """Execute a config file as a module; a config file is user code, so a failure is one line."""
    module_spec = importlib.util.spec_from_file_location(f"rnnjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:
        raise ConfigError(f"config file {name!r} fails to load: {_where(e, path)}") from None
    return module


def presets(name: str) -> tuple[str, ...]:
    """The presets of the shipped config `name` (`ptb` -> small, medium, large); () when it has none."""
    return tuple(getattr(_module(_shipped_configs() / f"{name}.py", name), "PRESETS", None) or ())


def shipped_config_path(spec: str) -> str:
    """`quickstart` or `ptb:small` -> the shipped config's file, preset kept (`/.../ptb.py:small`).

    A spec whose file part ends in .py or exists as a path is returned as given, and so is a name
    that is no shipped config (load() then says so and lists the shipped names). The lookup goes
    through the installed package, so names work after a non-editable install too.
    """
    path, colon, preset = spec.partition(":")
    if path.endswith(".py") or Path(path).exists():
        return spec
    shipped = _shipped_configs() / f"{path}.py"
    return f"{shipped}{colon}{preset}" if shipped.is_file() else spec


def load(spec: str) -> ConfigDict:
    """Load `path/to/config.py[:preset]` and return its locked ConfigDict."""
    path_str, _, preset = spec.partition(":")
    path = Path(path_str)
    if not path.is_file():
        hint = ""
        if "/" not in path_str and not path_str.endswith(".py"):  # a mistyped name rather than a path
            hint = f"; shipped configs: {', '.join(shipped_config_names())}"
        raise ConfigError(f"config file {path_str!r} not found{hint}")
    module = _module(path, path_str)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path_str!r} defines no get_config()")
    presets = getattr(module, "PRESETS", None)
    if preset and presets is None:
        raise ConfigError(f"config file {path_str!r} has no presets; drop ':{preset}'")
    if preset and preset not in presets:
        raise ConfigError(f"config file {path_str!r} has no preset {preset!r}; presets: {', '.join(presets)}")
    try:
        config = module.get_config(preset or None)
    except Exception as e:
        raise ConfigError(f"config file {path_str!r}: get_config() fails: {_where(e, path)}") from None
    check_keys(config)
    config.lock()
    return config


def _where(e: Exception, path: Path) -> str:
    """`TypeError: ... (line 12)`: the exception and the config file's line that raised it."""
    lines = [f.lineno for f in traceback.extract_tb(e.__traceback__) if Path(f.filename) == path]
    at = f" (line {lines[-1]})" if lines else ""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}{at}"


def check_keys(config: ConfigDict) -> None:
    """Refuse keys that no run reads (a typo in a config file would otherwise be ignored)."""
    known = set(flatten(defaults()))
    for key in flatten(config):
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, known)}")


def flatten(config: ConfigDict, prefix: str = "") -> dict:
    """{'train.batch_size': 20, ...} for every leaf of `config`."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ConfigDict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _suggest(key: str, known) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def set_key(config: ConfigDict, key: str, value) -> None:
    """config['a.b.c'] = value, walking the nested ConfigDicts."""
    *parents, leaf = key.split(".")
    for p in parents:
        config = config[p]
    config[leaf] = value


def apply_overrides(config: ConfigDict, overrides: dict[str, str]) -> ConfigDict:
    """Apply {'train.max_steps': '1000', ...} to a copy of `config`; one-line errors.

    The texts are parsed by `ml_collections.config_flags`, as `--config.KEY=VALUE` flags of
    a Flax example are: each into the type of the key's current value (`1` for a float key
    is 1.0; `true`/`false`/`1`/`0` for a bool; `200,100` or `(200, 100)` for a tuple).
    """
    config = ConfigDict(config.to_dict())
    config.lock()
    known = flatten(config)
    for key in overrides:
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}{_suggest(key, known)}")
    if not overrides:
        return config
    argv = ["rnnjax", *(f"--config.{key}={text}" for key, text in overrides.items())]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config, flag_values=flag_values, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as e:  # "flag --config.KEY=TEXT: why"
        key, _, text = str(e).removeprefix("flag --config.").partition(": ")[0].partition("=")
        expected = "true or false" if isinstance(known[key], bool) else type(known[key]).__name__
        raise ConfigError(f"bad value {text!r} for config key {key!r}: expected {expected}") from None
    return flag_values.config


def validate(config: ConfigDict) -> None:
    """Check every key's range before any work starts; the one-line message names the key."""
    flat = flatten(config)

    def refuse(key: str, expected: str) -> None:
        raise ConfigError(f"config key {key!r} = {flat[key]!r}: expected {expected}")

    for key in KEYS:
        if key.check is not None and not key.check(flat[key.name]):
            refuse(key.name, key.expected)
    m = config.model
    if m.cell_module:
        try:
            cells.import_cell_module(m.cell_module)
        except Exception as e:
            refuse("model.cell_module", f"an importable module or .py file that registers cells; importing it "
                                        f"failed: {type(e).__name__}: {e}")
    if m.cell not in cells.CELLS:
        refuse("model.cell", f"one of {', '.join(sorted(cells.CELLS))} (or a cell registered with "
                             f"rnnjax.cells.register_cell by the module that model.cell_module names)"
                             f"{_suggest(m.cell, cells.CELLS)}")
    if m.impl == "cudnn" and m.cell != "lstm":
        refuse("model.impl", f"'fast' or 'reference' with model.cell = {m.cell!r} (cudnn runs LSTMs only)")
    if m.impl == "cudnn" and config.task not in ("lm", "echo"):
        refuse("model.impl", f"'fast' or 'reference' with task = {config.task!r} (cudnn runs the language model "
                             f"of tasks lm and echo)")
    if m.compute_dtype != "float32" and m.impl == "cudnn":
        refuse("model.compute_dtype", "'float32' with model.impl = 'cudnn' (jax.experimental.rnn runs float32 only)")
    if m.compute_dtype != "float32" and config.task not in ("lm", "echo"):
        refuse("model.compute_dtype", f"'float32' with task = {config.task!r} (it applies to the language model "
                                      f"of tasks lm and echo)")
    if len(m.layer_sizes) not in (0, m.num_layers):
        refuse("model.layer_sizes", f"empty or one size per layer (model.num_layers = {m.num_layers})")
    if config.data.synthetic_branching > config.data.synthetic_vocab_size:
        refuse("data.synthetic_branching", f"at most data.synthetic_vocab_size = {config.data.synthetic_vocab_size}")
    if config.sine.train_points <= config.sine.window:
        refuse("sine.train_points", f"more than sine.window = {config.sine.window}")
    if config.train.patience > 0 and config.checkpoint.keep_best < 1:
        refuse("checkpoint.keep_best", "at least 1 with train.patience > 0 (the test split is scored with the "
                                       "best-validation checkpoint)")
    if config.train.weight_decay > 0 and config.train.optimizer != "adamw":
        refuse("train.weight_decay", f"0 with train.optimizer = {config.train.optimizer!r} (only adamw decays)")


def resolve(spec: str, overrides: dict[str, str]) -> ConfigDict:
    """The config a run is asked for: `spec` (a path or shipped name, `[:preset]`), the overrides
    applied, every key validated."""
    config = apply_overrides(load(shipped_config_path(spec)), overrides)
    validate(config)
    return config


def layer_sizes(config: ConfigDict) -> list[int]:
    m = config.model
    return list(m.layer_sizes) if m.layer_sizes else [m.hidden_size] * m.num_layers


def from_dict(saved: dict, where: str) -> ConfigDict:
    """A config saved as a plain dict (config.json, a checkpoint's meta), with tuples restored."""
    base = flatten(defaults())
    config = defaults()
    for key, value in flatten(ConfigDict(saved)).items():
        if key not in base:
            raise ConfigError(f"{where}: unknown config key {key!r}{_suggest(key, base)}")
        if isinstance(base[key], tuple):
            value = tuple(value)
        try:
            set_key(config, key, value)
        except TypeError as e:
            raise ConfigError(f"{where}: config key {key!r} = {value!r}: {e}") from None
    config.lock()
    return config


def from_json(path: Path) -> ConfigDict:
    """The config a run saved in its directory, checked like a new one."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the run's config ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: expected a JSON object of config keys")
    config = from_dict(saved, str(path))
    try:
        validate(config)  # also imports model.cell_module, so eval, sample and resume find a user's cell
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


def resume_changes(saved: ConfigDict, config: ConfigDict) -> tuple[list[str], list[str]]:
    """(keys that may not change when a run continues, "key old -> new" for the safe keys that did).

    A key the saved config lacks (added to `defaults()` since) counts as its default.
    """
    old = {k: _plain(v) for k, v in flatten(defaults()).items()}
    old.update({k: _plain(v) for k, v in flatten(saved).items()})
    new = {k: _plain(v) for k, v in flatten(config).items()}
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    safe = [k for k in changed if k in RESUME_SAFE]
    return [k for k in changed if k not in safe], [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in safe]
