"""Config files (`configs/NAME.py[:PRESET]`), `--config.KEY=VALUE` overrides, and checks.

A config file defines `get_config(preset: str | None = None) -> ml_collections.ConfigDict`,
in the style of Flax examples and big_vision. `defaults()` holds every key a run reads;
config files start from it and change values, so the key set is the same everywhere.
"""

from __future__ import annotations

import codecs
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
from rnnjax.errors import ConfigError

ConfigDict = ml_collections.ConfigDict


TASKS = ("lm", "sine", "echo", "sentiment")  # what `rnnjax train` can run (rnnjax.tasks)
# Keys a resumed run may change: they decide how long to train and what to log or keep,
# not what any step computes.
SAFE_KEYS = ("train.max_steps", "train.num_epochs", "train.patience", "train.log_every", "train.on_nonfinite",
             "eval.every_epochs", "eval.every_steps", "eval.sample_length", "eval.sample_prime")
SAFE_PREFIXES = ("checkpoint.", "parallel.")  # parallel.*: where steps run, not what they compute


def defaults() -> ConfigDict:
    """Every key a training run reads, with its default value."""
    c = ConfigDict()
    c.seed = 0
    c.task = "lm"  # what `rnnjax train` runs: one of TASKS (see rnnjax.tasks)

    c.data = ConfigDict()
    c.data.corpus = "synthetic"  # see rnnjax.data.CORPORA
    c.data.encoding = "utf-8"  # of the corpus files; e.g. "latin-1" for rt-polarity
    c.data.sampling = "contiguous"  # "contiguous" (Zaremba) | "sequential" (d2l, offset per epoch) | "random" (d2l)
    c.data.split_fractions = (0.9, 0.05, 0.05)  # train/valid/test of one-file corpora, contiguous runs
    c.data.char_oov = "unk"  # char level: valid/test chars unseen in train -> "unk" (<unk> token) | "error"
    c.data.text_level = "char"  # tokens of text:PATH and hub:NAME corpora: "char" | "word" (words + <eos>, <unk>)
    c.data.timemachine_text = "d2l"  # "d2l": letters only, lower-cased, as d2l does | "raw": every character
    c.data.hub_text_field = "text"  # column holding the text of a hub:NAME corpus
    c.data.synthetic_vocab_size = 24
    c.data.synthetic_branching = 3
    c.data.synthetic_train_tokens = 400_000
    c.data.synthetic_eval_tokens = 40_000

    c.model = ConfigDict()
    c.model.cell = "lstm"
    c.model.cell_module = ""  # module (dotted name or .py file) that registers user cells, imported before the lookup
    c.model.num_layers = 2
    c.model.hidden_size = 200
    c.model.layer_sizes = ()  # per-layer hidden sizes; () means hidden_size for every layer
    c.model.embed_size = 0  # 0: same as the first layer's hidden size
    c.model.dropout = 0.0
    c.model.dropout_type = "zaremba"  # "zaremba" (mask per step) | "variational" (per sequence)
    c.model.tie_embeddings = False
    c.model.init_scale = 0.0  # >0: every parameter ~ U(-init_scale, init_scale) (Zaremba)
    c.model.forget_bias = 0.0  # added to the LSTM forget-gate bias at init
    c.model.scan_unroll = 1
    c.model.impl = "fast"  # "fast" (custom-VJP scans, fused decoder+NLL) | "reference" (plain autodiff); same values

    c.train = ConfigDict()
    c.train.batch_size = 20
    c.train.seq_len = 20
    c.train.num_epochs = 1
    c.train.max_steps = -1  # >0 caps the run whatever num_epochs says
    c.train.patience = 0  # >0: stop once validation has not improved for this many evaluations (then the
    # test split is scored with the best-validation checkpoint's parameters); 0: train every step
    c.train.optimizer = "sgd"  # "sgd" | "adam" | "adamw"
    c.train.learning_rate = 1.0
    c.train.weight_decay = 0.0
    c.train.clip_norm = 5.0  # global-norm clipping; 0 disables
    c.train.schedule = "constant"  # "constant" | "step" | "cosine" | "warmup_cosine"
    c.train.decay_after_epochs = 0  # "step": lr constant for this many epochs, then decays
    c.train.decay_rate = 1.0  # "step": lr multiplier per epoch after that
    c.train.warmup_steps = 0
    c.train.time_sum_loss = False  # objective = per-token mean loss x seq_len (Zaremba's)
    c.train.log_every = 100
    c.train.on_nonfinite = "stop"  # non-finite loss: "stop" (keep the last checkpoint) | "rollback" (restore it, halve lr)

    c.eval = ConfigDict()
    c.eval.batch_size = 1  # 1: each split read as one stream, every token scored
    c.eval.seq_len = 500  # chunk length for evaluation (state carried between chunks)
    c.eval.every_epochs = 1
    c.eval.every_steps = 0  # >0: also evaluate on valid every this many steps (loss-vs-time curves)
    c.eval.sample_length = 0  # >0: print a sample of this many tokens at each evaluation (char-RNN progress)
    c.eval.sample_prime = ""  # text the sample starts from; "" means the first token of the training split

    c.checkpoint = ConfigDict()  # Orbax checkpoints in DIR/checkpoints: at every epoch end, validation and run end
    c.checkpoint.every_steps = 0  # >0: also save every this many steps
    c.checkpoint.every_secs = 600  # >0: also save at the first step, then whenever this long passed since a save
    c.checkpoint.keep = 3  # newest checkpoints kept
    c.checkpoint.keep_best = 1  # also kept: this many with the lowest validation perplexity

    c.sine = ConfigDict()  # task "sine": predict sin at the next point from the previous `window` samples
    c.sine.window = 10
    c.sine.spacing = 0.01  # x step between samples
    c.sine.train_points = 10_000  # x = 0, spacing, ...; test points follow the train range
    c.sine.test_points = 1_000

    c.echo = ConfigDict()  # task "echo": a random bit stream, target = input delayed by echo_step
    c.echo.echo_step = 3
    c.echo.train_length = 50_000  # bits per training epoch (a fresh stream each epoch)
    c.echo.test_length = 10_000  # bits of fresh data the accuracy is measured on

    c.sentiment = ConfigDict()  # task "sentiment": sentence polarity (rt-polarity), many-to-one
    c.sentiment.test_fraction = 0.1  # seeded split of all sentences into train / test
    c.sentiment.valid_fraction = 0.1  # of the train part, held out to pick the epoch kept
    c.sentiment.min_count = 1  # train words seen fewer times become <unk>
    c.sentiment.bidirectional = False
    c.sentiment.pooling = "last"  # "last" (last real step) | "mean" (mean over real steps)

    c.parallel = ConfigDict()
    c.parallel.num_devices = 0  # data-parallel devices the batch is split over; 0: all visible (every host)

    c.sweep = ConfigDict()  # read by `rnnjax sweep` only
    c.sweep.match_params = False  # true: each cell's hidden size gives the LSTM's parameter count (within 2%)
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


def _shipped_config_names() -> list[str]:
    """The names `--config` accepts for shipped configs: 'charrnn', ..., 'sweeps/quick'."""
    root = _shipped_configs()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*.py")
                  if p.name != "__init__.py")


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
            hint = f"; shipped configs: {', '.join(_shipped_config_names())}"
        raise ConfigError(f"config file {path_str!r} not found{hint}")
    module_spec = importlib.util.spec_from_file_location(f"rnnjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # a config file is user code: report where it broke, in one line
        raise ConfigError(f"config file {path_str!r} fails to load: {_where(e, path)}") from None
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


def _one_of(*allowed):
    return (lambda v: v in allowed), " or ".join(repr(a) for a in allowed)


_AT_LEAST_1 = (lambda v: v >= 1), "at least 1"
_OFF_OR_POSITIVE = (lambda v: v >= 0), "0 (off) or positive"
_POSITIVE = (lambda v: v > 0), "positive"
_FRACTION = (lambda v: 0.0 < v < 1.0), "in (0, 1)"


def _encoding(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _fractions(f) -> bool:
    return len(f) == 3 and all(x > 0 for x in f) and abs(sum(f) - 1.0) < 1e-6


# One row per key with a restricted range: (key, predicate, what is expected). Keys whose
# allowed values depend on the key set itself (cell names, tasks) are checked in `validate`.
CHECKS = [
    ("seed", (lambda v: v >= 0), "0 or positive"),
    ("data.encoding", _encoding, "a Python codec name, e.g. 'utf-8' or 'latin-1'"),
    ("data.sampling", *_one_of("contiguous", "sequential", "random")),
    ("data.split_fractions", _fractions, "three positive fractions (train, valid, test) summing to 1"),
    ("data.char_oov", *_one_of("unk", "error")),
    ("data.text_level", *_one_of("char", "word")),
    ("data.timemachine_text", *_one_of("d2l", "raw")),
    ("data.synthetic_vocab_size", (lambda v: v >= 2), "at least 2"),
    ("data.synthetic_branching", *_AT_LEAST_1),
    ("data.synthetic_train_tokens", *_AT_LEAST_1),
    ("data.synthetic_eval_tokens", *_AT_LEAST_1),
    ("model.num_layers", *_AT_LEAST_1),
    ("model.hidden_size", *_AT_LEAST_1),
    ("model.layer_sizes", (lambda v: all(h >= 1 for h in v)), "sizes of at least 1"),
    ("model.embed_size", (lambda v: v >= 0), "0 (the first layer's size) or positive"),
    ("model.dropout", (lambda v: 0.0 <= v < 1.0), "in [0, 1)"),
    ("model.dropout_type", *_one_of("zaremba", "variational")),
    ("model.init_scale", (lambda v: v >= 0), "0 (default init) or positive"),
    ("model.scan_unroll", *_AT_LEAST_1),
    ("model.impl", *_one_of("fast", "reference")),
    ("train.batch_size", *_AT_LEAST_1),
    ("train.seq_len", *_AT_LEAST_1),
    ("train.num_epochs", *_AT_LEAST_1),
    ("train.max_steps", (lambda v: v == -1 or v >= 1), "-1 (no cap) or positive"),
    ("train.patience", (lambda v: v >= 0), "0 (off) or positive"),
    ("train.optimizer", *_one_of("sgd", "adam", "adamw")),
    ("train.learning_rate", *_POSITIVE),
    ("train.weight_decay", (lambda v: v >= 0), "0 or positive"),
    ("train.clip_norm", *_OFF_OR_POSITIVE),
    ("train.schedule", *_one_of("constant", "step", "cosine", "warmup_cosine")),
    ("train.decay_after_epochs", (lambda v: v >= 0), "0 or positive"),
    ("train.decay_rate", _POSITIVE[0], "positive"),
    ("train.warmup_steps", (lambda v: v >= 0), "0 or positive"),
    ("train.log_every", *_AT_LEAST_1),
    ("train.on_nonfinite", *_one_of("stop", "rollback")),
    ("eval.batch_size", *_AT_LEAST_1),
    ("eval.seq_len", *_AT_LEAST_1),
    ("eval.every_epochs", *_AT_LEAST_1),
    ("eval.every_steps", *_OFF_OR_POSITIVE),
    ("eval.sample_length", *_OFF_OR_POSITIVE),
    ("checkpoint.every_steps", *_OFF_OR_POSITIVE),
    ("checkpoint.every_secs", *_OFF_OR_POSITIVE),
    ("checkpoint.keep", *_AT_LEAST_1),
    ("checkpoint.keep_best", *_OFF_OR_POSITIVE),
    ("sine.window", *_AT_LEAST_1),
    ("sine.spacing", *_POSITIVE),
    ("sine.test_points", *_AT_LEAST_1),
    ("echo.echo_step", (lambda v: v >= 0), "0 or positive"),
    ("echo.train_length", *_AT_LEAST_1),
    ("echo.test_length", *_AT_LEAST_1),
    ("sentiment.test_fraction", *_FRACTION),
    ("sentiment.valid_fraction", *_FRACTION),
    ("sentiment.min_count", *_AT_LEAST_1),
    ("sentiment.pooling", *_one_of("last", "mean")),
    ("parallel.num_devices", (lambda v: v >= 0), "0 (all devices) or positive"),
]


def validate(config: ConfigDict, tasks: tuple[str, ...] = TASKS) -> None:
    """Check every key's range before any work starts; the one-line message names the key."""
    flat = flatten(config)

    def refuse(key: str, expected: str) -> None:
        raise ConfigError(f"config key {key!r} = {flat[key]!r}: expected {expected}")

    for key, ok, expected in CHECKS:
        if not ok(flat[key]):
            refuse(key, expected)
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
    if len(m.layer_sizes) not in (0, m.num_layers):
        refuse("model.layer_sizes", f"empty or one size per layer (model.num_layers = {m.num_layers})")
    if config.data.synthetic_branching > config.data.synthetic_vocab_size:
        refuse("data.synthetic_branching", f"at most data.synthetic_vocab_size = {config.data.synthetic_vocab_size}")
    if config.sine.train_points <= config.sine.window:
        refuse("sine.train_points", f"more than sine.window = {config.sine.window}")
    if config.train.patience > 0 and config.checkpoint.keep_best < 1:
        refuse("checkpoint.keep_best", "at least 1 with train.patience > 0 (the test split is scored with the "
                                       "best-validation checkpoint)")
    if config.task not in tasks:
        refuse("task", " or ".join(repr(t) for t in tasks))


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
    safe = [k for k in changed if k in SAFE_KEYS or k.startswith(SAFE_PREFIXES)]
    return [k for k in changed if k not in safe], [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in safe]
