"""Corpora as token-id arrays: where the files live, how they are read, their vocabulary.

`load_corpus(config, data_dir)` returns a `Corpus`: one contiguous int32 array per
split and the vocabulary (built from train only; id order saved as `vocab.json`).
The data directory is `--data-dir`, else `$RNNJAX_DATA_DIR`, else `~/.cache/rnnjax/data`,
laid out as `ptb/ptb.train.txt`, `tinyshakespeare/input.txt`, ...
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnjax import synthetic
from rnnjax.config import ConfigDict

DATA_DIR_ENV = "RNNJAX_DATA_DIR"


class DataError(ValueError):
    """A missing, unreadable or unusable corpus file; one-line message naming it."""


class Corpus(NamedTuple):
    name: str
    level: str  # "word" | "char" | "symbol"
    vocab: list[str]
    splits: dict[str, np.ndarray]  # "train" | "valid" | "test" -> int32 token ids
    floor_ppl: float | None = None  # exact perplexity floor, for generated corpora

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def resolve_data_dir(flag: str | None = None) -> Path:
    if flag:
        return Path(flag).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path("~/.cache/rnnjax/data").expanduser()


def read_text(path: Path, encoding: str, corpus: str) -> str:
    """Whole file as text; one-line errors for a missing or wrongly encoded file."""
    if not path.is_file():
        raise DataError(
            f"corpus {corpus!r}: file {path} not found (run `rnnjax data fetch {corpus}` "
            f"or point --data-dir / ${DATA_DIR_ENV} at a directory holding it)"
        )
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not valid {encoding} at byte offset {e.start}; set data.encoding (e.g. 'latin-1')"
        ) from None


def word_tokens(text: str) -> list[str]:
    """Mikolov/Zaremba tokenisation: whitespace-split words, each line ends in `<eos>`."""
    out = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        out.extend(line.split())
        out.append("<eos>")
    return out


def build_vocab(tokens: list[str]) -> list[str]:
    """Tokens by descending count, ties by token (Zaremba's reader order)."""
    counts = collections.Counter(tokens)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def encode(tokens: list[str], vocab: list[str], where: str) -> np.ndarray:
    index = {t: i for i, t in enumerate(vocab)}
    unk = index.get("<unk>")
    ids = np.empty(len(tokens), np.int32)
    for n, t in enumerate(tokens):
        i = index.get(t, unk)
        if i is None:
            raise DataError(f"{where}: token {t!r} is not in the training vocabulary and there is no <unk>")
        ids[n] = i
    return ids


def _load_ptb(data_dir: Path, config: ConfigDict) -> Corpus:
    files = {s: data_dir / "ptb" / f"ptb.{s}.txt" for s in ("train", "valid", "test")}
    tokens = {s: word_tokens(read_text(p, config.data.encoding, "ptb")) for s, p in files.items()}
    vocab = build_vocab(tokens["train"])
    splits = {s: encode(t, vocab, str(files[s])) for s, t in tokens.items()}
    return Corpus("ptb", "word", vocab, splits)


def _load_synthetic(data_dir: Path, config: ConfigDict) -> Corpus:
    d = config.data
    out = synthetic.splits(config.seed, d.synthetic_vocab_size, d.synthetic_branching,
                           d.synthetic_train_tokens, d.synthetic_eval_tokens)
    return Corpus("synthetic", "symbol", synthetic.symbols(d.synthetic_vocab_size), out["splits"], out["floor_ppl"])


LOADERS = {
    "ptb": _load_ptb,
    "synthetic": _load_synthetic,
}


def load_corpus(config: ConfigDict, data_dir: Path) -> Corpus:
    name = config.data.corpus
    if name not in LOADERS:
        raise DataError(f"config key 'data.corpus' = {name!r}: expected one of {sorted(LOADERS)}")
    corpus = LOADERS[name](data_dir, config)
    need = config.train.batch_size * (config.train.seq_len + 1)
    if len(corpus.splits["train"]) < need:
        raise DataError(
            f"corpus {name!r}: train split has {len(corpus.splits['train'])} tokens, fewer than one batch needs "
            f"(train.batch_size x (train.seq_len + 1) = {need})"
        )
    return corpus
