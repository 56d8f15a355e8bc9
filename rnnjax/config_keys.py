"""Every config key in one table: its default, its allowed range, one line of meaning, and
whether a resumed run may change it.

`config.defaults()`, the validation in `config.validate`, the resume check, `rnnjax config keys`
and the README's key table are all read from `KEYS`, so none of them can drift from another
(tests/test_config.py compares the README's table with `keys_markdown()`).
"""

from __future__ import annotations

import codecs
from typing import Any, Callable, NamedTuple

TASKS = ("lm", "sine", "echo", "sentiment")  # what `rnnjax train` can run (rnnjax.tasks)
VMAP_AXES = ("seed", "train.learning_rate")  # what members of one population may differ in


class Key(NamedTuple):
    """One config key. `check` (a predicate) and `expected` (its words) restrict the range;
    `resume_safe` keys decide how long to train and what to log or keep, not what a step computes."""

    name: str
    default: Any
    meaning: str
    check: Callable[[Any], bool] | None = None
    expected: str = ""
    resume_safe: bool = False


def _one_of(*allowed) -> dict:
    return {"check": lambda v: v in allowed, "expected": " or ".join(repr(a) for a in allowed)}


def _at_least(n: int) -> dict:
    return {"check": lambda v: v >= n, "expected": f"at least {n}"}


_AT_LEAST_1 = _at_least(1)
_NON_NEGATIVE = {"check": lambda v: v >= 0, "expected": "0 or positive"}
_OFF_OR_POSITIVE = {"check": lambda v: v >= 0, "expected": "0 (off) or positive"}
_POSITIVE = {"check": lambda v: v > 0, "expected": "positive"}
_FRACTION = {"check": lambda v: 0.0 < v < 1.0, "expected": "in (0, 1)"}


def _encoding(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _fractions(f) -> bool:
    return len(f) == 3 and all(x > 0 for x in f) and abs(sum(f) - 1.0) < 1e-6


KEYS = (
    Key("seed", 0, "PRNG seed of initialisation, dropout and data order", **_NON_NEGATIVE),
    Key("task", "lm", "what `rnnjax train` runs: lm, sine, echo or sentiment (rnnjax.tasks)", **_one_of(*TASKS)),

    Key("data.corpus", "synthetic", "corpus name (`rnnjax data`), `text:PATH` or `hub:NAME[:CONFIG][@REVISION]`"),
    Key("data.encoding", "utf-8", "encoding of the corpus files, e.g. latin-1 for rt-polarity", _encoding,
        "a Python codec name, e.g. 'utf-8' or 'latin-1'"),
    Key("data.sampling", "contiguous", "batches: contiguous (Zaremba, state carried), sequential (d2l, "
        "offset per epoch) or random (d2l)", **_one_of("contiguous", "sequential", "random")),
    Key("data.split_fractions", (0.9, 0.05, 0.05), "train/valid/test fractions of a one-file corpus, in order",
        _fractions, "three positive fractions (train, valid, test) summing to 1"),
    Key("data.char_oov", "unk", "char level: valid/test characters unseen in train become <unk> (unk) or "
        "are refused (error)", **_one_of("unk", "error")),
    Key("data.text_level", "char", "tokens of text: and hub: corpora: char or word (words + <eos>, <unk>)",
        **_one_of("char", "word")),
    Key("data.timemachine_text", "d2l", "The Time Machine: d2l (letters only, lower-cased) or raw (every "
        "character)", **_one_of("d2l", "raw")),
    Key("data.hub_text_field", "text", "column holding the text of a hub: corpus (sentence for "
        "hub:ptb-text-only/ptb_text_only@refs/convert/parquet)"),
    Key("data.synthetic_vocab_size", 24, "synthetic corpus: symbols of the Markov source", **_at_least(2)),
    Key("data.synthetic_branching", 3, "synthetic corpus: successors each context can have", **_AT_LEAST_1),
    Key("data.synthetic_train_tokens", 400_000, "synthetic corpus: training tokens", **_AT_LEAST_1),
    Key("data.synthetic_eval_tokens", 40_000, "synthetic corpus: tokens of valid and of test", **_AT_LEAST_1),

    Key("model.cell", "lstm", "cell name from rnnjax.cells.CELLS (or registered by model.cell_module)"),
    Key("model.cell_module", "", "module (dotted name or .py file) that registers user cells, imported before "
        "the cell is looked up"),
    Key("model.num_layers", 2, "stacked recurrent layers", **_AT_LEAST_1),
    Key("model.hidden_size", 200, "hidden units of every layer (unless model.layer_sizes)", **_AT_LEAST_1),
    Key("model.layer_sizes", (), "per-layer hidden sizes; (): model.hidden_size for every layer",
        lambda v: all(h >= 1 for h in v), "sizes of at least 1"),
    Key("model.embed_size", 0, "embedding width; 0: the first layer's hidden size", **_NON_NEGATIVE),
    Key("model.dropout", 0.0, "dropout rate on the non-recurrent connections", lambda v: 0.0 <= v < 1.0,
        "in [0, 1)"),
    Key("model.dropout_type", "zaremba", "zaremba (a new mask each step) or variational (one mask per sequence)",
        **_one_of("zaremba", "variational")),
    Key("model.tie_embeddings", False, "share the embedding matrix with the output layer"),
    Key("model.init_scale", 0.0, ">0: every parameter ~ U(-init_scale, init_scale) (Zaremba); 0: PyTorch's init",
        lambda v: v >= 0, "0 (default init) or positive"),
    Key("model.forget_bias", 0.0, "added to the LSTM forget-gate bias at initialisation"),
    Key("model.scan_unroll", 1, "lax.scan unroll factor of the recurrence", **_AT_LEAST_1),
    Key("model.impl", "fast", "fast (custom-VJP scans, fused decoder + NLL) or reference (plain autodiff), "
        "same values; cudnn: the LSTM layers through jax.experimental.rnn (an NVIDIA or AMD GPU, float32, "
        "tasks lm and echo)", **_one_of("fast", "reference", "cudnn")),
    Key("model.compute_dtype", "float32", "dtype of the language model's matmuls: bfloat16 casts the float32 "
        "parameters for each step (mixed precision: parameters, optimizer state, carries and loss stay float32; "
        "float64 parameters are never cast); impl fast or reference, tasks lm and echo",
        **_one_of("float32", "bfloat16")),

    Key("train.batch_size", 20, "sequences per step (split over the data-parallel devices)", **_AT_LEAST_1),
    Key("train.seq_len", 20, "unrolled steps per batch (truncated BPTT length)", **_AT_LEAST_1),
    Key("train.num_epochs", 1, "passes over the training split", **_AT_LEAST_1, resume_safe=True),
    Key("train.max_steps", -1, ">0: caps the run whatever train.num_epochs says; -1: no cap",
        lambda v: v == -1 or v >= 1, "-1 (no cap) or positive", resume_safe=True),
    Key("train.patience", 0, ">0: stop once validation has not improved for this many evaluations and score "
        "test with the best-validation checkpoint; 0: train every planned step", **_OFF_OR_POSITIVE,
        resume_safe=True),
    Key("train.optimizer", "sgd", "sgd, adam or adamw (Optax)", **_one_of("sgd", "adam", "adamw")),
    Key("train.learning_rate", 1.0, "peak learning rate", **_POSITIVE),
    Key("train.weight_decay", 0.0, "adamw's decoupled weight decay (sgd and adam have none: refused there)", **_NON_NEGATIVE),
    Key("train.clip_norm", 5.0, "global-norm gradient clipping; 0: off", **_OFF_OR_POSITIVE),
    Key("train.schedule", "constant", "learning-rate schedule: constant, step (Zaremba), cosine or "
        "warmup_cosine", **_one_of("constant", "step", "cosine", "warmup_cosine")),
    Key("train.decay_after_epochs", 0, "step schedule: epochs at the peak rate before decay starts",
        **_NON_NEGATIVE),
    Key("train.decay_rate", 1.0, "step schedule: learning-rate multiplier per epoch after that", **_POSITIVE),
    Key("train.warmup_steps", 0, "warmup_cosine: steps of linear warmup", **_NON_NEGATIVE),
    Key("train.time_sum_loss", False, "objective = per-token mean loss x seq_len (Zaremba's)"),
    Key("train.log_every", 100, "steps between train records and progress lines", **_AT_LEAST_1,
        resume_safe=True),
    Key("train.on_nonfinite", "stop", "non-finite loss: stop (keep the last checkpoint, exit 3) or rollback "
        "(restore it, halve the learning rate, continue)", **_one_of("stop", "rollback"), resume_safe=True),

    Key("eval.batch_size", 1, "evaluation streams; 1: each split read as one stream, every token scored",
        **_AT_LEAST_1),
    Key("eval.seq_len", 500, "evaluation chunk length (state carried between chunks)", **_AT_LEAST_1),
    Key("eval.every_epochs", 1, "validate every this many epochs", **_AT_LEAST_1, resume_safe=True),
    Key("eval.every_steps", 0, ">0: also validate every this many steps (loss-against-time curves)",
        **_OFF_OR_POSITIVE, resume_safe=True),
    Key("eval.sample_length", 0, ">0: print a sample of this many tokens at each validation", **_OFF_OR_POSITIVE,
        resume_safe=True),
    Key("eval.sample_prime", "", "text the samples start from; empty: the training split's first token",
        resume_safe=True),

    Key("checkpoint.every_steps", 0, ">0: also save every this many steps (saves always happen at each epoch "
        "end, validation, run end and signal)", **_OFF_OR_POSITIVE, resume_safe=True),
    Key("checkpoint.every_secs", 600, ">0: also save at the first step, then whenever this long passed since "
        "a save (Orbax ContinuousCheckpointingPolicy)", **_OFF_OR_POSITIVE, resume_safe=True),
    Key("checkpoint.keep", 3, "newest checkpoints kept", **_AT_LEAST_1, resume_safe=True),
    Key("checkpoint.keep_best", 1, "also kept: this many with the best validation metric", **_OFF_OR_POSITIVE,
        resume_safe=True),

    Key("sine.window", 10, "sine task: previous samples the model reads", **_AT_LEAST_1),
    Key("sine.spacing", 0.01, "sine task: x step between samples", **_POSITIVE),
    Key("sine.train_points", 10_000, "sine task: training points x = 0, spacing, ..."),
    Key("sine.test_points", 1_000, "sine task: test points, after the training range", **_AT_LEAST_1),

    Key("echo.echo_step", 3, "echo task: target = input bit stream delayed by this many steps", **_NON_NEGATIVE),
    Key("echo.train_length", 50_000, "echo task: bits per training epoch (a fresh stream each)", **_AT_LEAST_1),
    Key("echo.test_length", 10_000, "echo task: bits of fresh data the accuracy is measured on", **_AT_LEAST_1),

    Key("sentiment.test_fraction", 0.1, "sentiment task: seeded share of sentences held out for test",
        **_FRACTION),
    Key("sentiment.valid_fraction", 0.1, "sentiment task: share of the rest held out to pick the epoch kept",
        **_FRACTION),
    Key("sentiment.min_count", 1, "sentiment task: train words seen fewer times become <unk>", **_AT_LEAST_1),
    Key("sentiment.bidirectional", False, "sentiment task: bidirectional stack"),
    Key("sentiment.pooling", "last", "sentiment task: last (last real step) or mean (mean over real steps)",
        **_one_of("last", "mean")),

    Key("parallel.num_devices", 0, "data-parallel devices the batch is split over; 0: all visible (every host)",
        lambda v: v >= 0, "0 (all devices) or positive", resume_safe=True),

    Key("sweep.match_params", False, "rnnjax sweep: each cell's hidden size set to give the LSTM's parameter "
        "count (within 2%)"),
    Key("sweep.vmap_axes", (), "rnnjax sweep: points that differ only in these keys (seed, "
        "train.learning_rate) train as one vmapped program, a population (rnnjax.population)",
        lambda v: len(set(v)) == len(v) and set(v) <= set(VMAP_AXES),
        "distinct names among " + ", ".join(repr(a) for a in VMAP_AXES) + ", written as a tuple, e.g. "
        "--config.sweep.vmap_axes=\"('seed', 'train.learning_rate')\""),
)

BY_NAME = {k.name: k for k in KEYS}
RESUME_SAFE = tuple(k.name for k in KEYS if k.resume_safe)


def keys_markdown() -> str:
    """The key table as Markdown: what `rnnjax config keys` prints and the README shows."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for k in KEYS:
        safe = " (may change on resume)" if k.resume_safe else ""
        rows.append(f"| `{k.name}` | `{k.default!r}` | {k.meaning}{safe} |")
    return "\n".join(rows) + "\n"
