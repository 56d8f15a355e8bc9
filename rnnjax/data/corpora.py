"""Corpora as token-id arrays: where the files live, how they are read, their vocabulary.

`load_corpus(config, data_dir)` returns a `Corpus`: one contiguous int32 array per
split and the vocabulary (built from train only; id order saved as `vocab.json`).
The data directory is `--data-dir`, else `$RNNJAX_DATA_DIR`, else `~/.cache/rnnjax/data`,
laid out as `ptb/ptb.train.txt`, `tinyshakespeare/input.txt`, ... (`rnnjax.data.fetch`).

`data.corpus` is one of
    ptb              words, Mikolov's split, 10k vocabulary with <unk>, newline -> <eos>
    ptb_char         characters of the same files: words joined by '_', newline -> <eos>
    tinyshakespeare, anna, jaychou, timemachine   characters of one file, split contiguously
    text:PATH        a user's file, or a directory holding train.txt/valid.txt/test.txt
                     (else every *.txt in it, in name order); `data.text_level` word|char
    hub:NAME[:CONFIG]  a Hugging Face hub dataset that `datasets` loads without a script
    synthetic        the generated corpus with a known perplexity floor
Single-file corpora are cut into train/valid/test as contiguous runs of tokens in the
fractions `data.split_fractions` (90/5/5). Line ends are normalised to "\\n" (CRLF, CR).

Files are read (on first use) with Hugging Face `datasets` (`load_dataset("text", ...)`);
the token ids are then cached as .npy under `$RNNJAX_TOKEN_CACHE` (default
`~/.cache/rnnjax/tokens`), keyed by the files' SHA-256 and every option that changes
them, so later starts only hash the files and load the arrays.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from rnnjax.config import ConfigDict
from rnnjax.data import fetch, synthetic
from rnnjax.data.cache import cached_splits
from rnnjax.data.corpus import Corpus, Sentences
from rnnjax.data.sources import load_hub, load_text
from rnnjax.data.text import (SPLITS, d2l_letters, make_splits, ptb_char_tokens, read_text, read_texts,
                              split_fractions, word_tokens)
from rnnjax.errors import ConfigError, DataError

DATA_DIR_ENV = "RNNJAX_DATA_DIR"


def resolve_data_dir(flag: str | None = None) -> Path:
    if flag:
        return Path(flag).expanduser()
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return Path("~/.cache/rnnjax/data").expanduser()


# --- corpora ------------------------------------------------------------------------------


def registry_files(corpus: str, data_dir: Path) -> tuple[list[Path], list[str]]:
    """Paths and checksums of a registered corpus's files, all present and verified.

    Fails at once, naming the fetch command, if any file is missing: training never
    downloads in the middle of a run.
    """
    remotes = fetch.remotes(corpus)
    paths = [data_dir / r.path for r in remotes]
    for p in paths:
        if not p.is_file():
            raise DataError(f"corpus {corpus!r}: file {p} not found; run `{fetch.fetch_command(corpus, data_dir)}` "
                            f"(or point --data-dir / ${DATA_DIR_ENV} at a directory holding it)")
    for r, p in zip(remotes, paths):
        fetch.verify(p, r)
    return paths, [r.sha256 for r in remotes]


def _load_ptb(data_dir: Path, config: ConfigDict) -> Corpus:
    return _ptb(data_dir, config, "ptb", "word", word_tokens)


def _load_ptb_char(data_dir: Path, config: ConfigDict) -> Corpus:
    return _ptb(data_dir, config, "ptb_char", "char", ptb_char_tokens)


def _ptb(data_dir: Path, config: ConfigDict, name: str, level: str, tokenize: Callable[[str], list[str]]) -> Corpus:
    paths, sums = registry_files(name, data_dir)
    files = dict(zip(SPLITS, paths))
    key = {"corpus": name, "sha256": sums, "encoding": config.data.encoding, "char_oov": config.data.char_oov}

    def build():
        texts = read_texts({s: [p] for s, p in files.items()}, config.data.encoding, name)
        return make_splits({s: tokenize(t) for s, t in texts.items()}, level, config,
                           {s: str(p) for s, p in files.items()})

    vocab, splits = cached_splits(name, key, build)
    return Corpus(name, level, vocab, splits, files={s: (str(p),) for s, p in files.items()})


def _single_file_chars(name: str, preprocess: Callable[[str], str] = lambda t: t, option: str = ""):
    """Loader of a registered one-file character corpus, split by `data.split_fractions`."""

    def load(data_dir: Path, config: ConfigDict) -> Corpus:
        (path,), sums = registry_files(name, data_dir)
        return _chars_of_file(name, path, sums[0], config, preprocess, option)

    return load


def _chars_of_file(name: str, path: Path, sha: str, config: ConfigDict, preprocess: Callable[[str], str],
                   option: str = "") -> Corpus:
    d = config.data
    key = {"corpus": name, "sha256": [sha], "encoding": d.encoding, "char_oov": d.char_oov,
           "fractions": list(d.split_fractions), "option": option}

    def build():
        tokens = list(preprocess(read_text(path, d.encoding, name)))
        return make_splits(split_fractions(tokens, d.split_fractions), "char", config, dict.fromkeys(SPLITS, str(path)))

    vocab, splits = cached_splits(name, key, build)
    return Corpus(name, "char", vocab, splits, files=dict.fromkeys(SPLITS, (str(path),)))


def _load_timemachine(data_dir: Path, config: ConfigDict) -> Corpus:
    mode = config.data.timemachine_text
    if mode not in ("d2l", "raw"):
        raise ConfigError(f"config key 'data.timemachine_text' = {mode!r}: expected 'd2l' or 'raw'")
    return _single_file_chars("timemachine", d2l_letters if mode == "d2l" else lambda t: t, mode)(data_dir, config)


def _load_synthetic(data_dir: Path, config: ConfigDict) -> Corpus:
    d = config.data
    out = synthetic.splits(config.seed, d.synthetic_vocab_size, d.synthetic_branching,
                           d.synthetic_train_tokens, d.synthetic_eval_tokens)
    return Corpus("synthetic", "symbol", synthetic.symbols(d.synthetic_vocab_size), out["splits"], out["floor_ppl"])


LOADERS = {
    "ptb": _load_ptb,
    "ptb_char": _load_ptb_char,
    "tinyshakespeare": _single_file_chars("tinyshakespeare"),
    "anna": _single_file_chars("anna"),
    "jaychou": _single_file_chars("jaychou"),
    "timemachine": _load_timemachine,
    "synthetic": _load_synthetic,
}
SOURCE_LOADERS = {"text": load_text, "hub": load_hub}  # `text:PATH`, `hub:NAME[:CONFIG]`
CORPORA = (*LOADERS, "text:PATH", "hub:NAME[:CONFIG]")


def load_corpus(config: ConfigDict, data_dir: Path, check_size: bool = True) -> Corpus:
    """The corpus `data.corpus`; with `check_size`, each split must fill one train/eval batch."""
    name = config.data.corpus
    prefix, colon, spec = name.partition(":")
    if colon and prefix in SOURCE_LOADERS:
        corpus = SOURCE_LOADERS[prefix](spec, config)
    elif name in LOADERS:
        corpus = LOADERS[name](data_dir, config)
    else:
        hint = " (a sentence-level corpus: see load_sentences)" if name in SENTENCE_LOADERS else ""
        raise DataError(f"config key 'data.corpus' = {name!r}{hint}: expected one of {', '.join(CORPORA)}")
    if check_size:
        need = {"train": (config.train.batch_size * (config.train.seq_len + 1),
                          "train.batch_size x (train.seq_len + 1)"),
                "valid": (2 * config.eval.batch_size, "2 x eval.batch_size"),
                "test": (2 * config.eval.batch_size, "2 x eval.batch_size")}
        for split, (n, rule) in need.items():
            have = len(corpus.splits[split])
            if have < n:
                raise DataError(f"corpus {name!r}: {split} split has {have:,} tokens, fewer than one batch needs "
                                f"({rule} = {n:,})")
    return corpus


# --- sentence-level corpora ---------------------------------------------------------------


def _load_rt_polarity(data_dir: Path, config: ConfigDict) -> Sentences:
    """Pang & Lee's sentence polarity v1.0: label 0 = rt-polarity.neg, 1 = rt-polarity.pos."""
    paths, _ = registry_files("rt-polarity", data_dir)
    by_name = {p.suffix[1:]: p for p in paths}
    texts = read_texts({label: [by_name[label]] for label in ("neg", "pos")}, config.data.encoding, "rt-polarity")
    sentences, labels = [], []
    for label, name in enumerate(("neg", "pos")):
        lines = [line.split() for line in texts[name].split("\n")]
        lines = [words for words in lines if words]
        sentences += lines
        labels += [label] * len(lines)
    return Sentences("rt-polarity", sentences, np.asarray(labels, np.int32), ["neg", "pos"],
                     (str(by_name["neg"]), str(by_name["pos"])))


SENTENCE_LOADERS = {"rt-polarity": _load_rt_polarity}


def load_sentences(config: ConfigDict, data_dir: Path) -> Sentences:
    """The sentence-level corpus `data.corpus` (e.g. 'rt-polarity' with data.encoding='latin-1')."""
    name = config.data.corpus
    if name not in SENTENCE_LOADERS:
        raise DataError(f"config key 'data.corpus' = {name!r}: expected a sentence corpus, one of "
                        f"{', '.join(SENTENCE_LOADERS)}")
    return SENTENCE_LOADERS[name](data_dir, config)
