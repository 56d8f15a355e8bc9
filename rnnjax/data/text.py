"""Text: reading files in the configured encoding, tokenisers, the vocabulary and splits.

Every corpus goes through here: its files are read as text (with one-line errors for a
missing or empty file and for bytes not in `data.encoding`), cut into tokens (PTB words,
PTB characters, d2l's letters, or plain characters), split into train/valid/test and
encoded against the vocabulary of the training split.
"""

from __future__ import annotations

import codecs
import collections
import re
from pathlib import Path

import numpy as np

from rnnjax.config import ConfigDict
from rnnjax.errors import ConfigError, DataError

UNK, EOS, SPACE = "<unk>", "<eos>", "_"
SPLITS = ("train", "valid", "test")

# --- reading ------------------------------------------------------------------------------


def read_texts(files: dict[str, list[Path]], encoding: str, corpus: str) -> dict[str, str]:
    """Each split's files as one text (files joined on line ends), read with `datasets`.

    One-line errors for a missing or empty file and for bytes that are not `encoding`.
    """
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"config key 'data.encoding' = {encoding!r}: unknown encoding") from None
    for paths in files.values():
        for p in paths:
            if not p.is_file():
                raise DataError(f"corpus {corpus!r}: file {p} not found")
            if p.stat().st_size == 0:
                raise DataError(f"corpus {corpus!r}: file {p} is empty")
    import datasets

    bars_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset("text", data_files={s: [str(p) for p in ps] for s, ps in files.items()},
                                   sample_by="document", keep_linebreaks=True, encoding=encoding)
    except Exception as e:  # datasets wraps the decoder's error; find the file and byte offset ourselves
        if _caused_by(e, UnicodeDecodeError):
            _raise_decode_error([p for ps in files.values() for p in ps], encoding)
        raise
    finally:
        if bars_on:
            datasets.enable_progress_bars()
    return {s: join_lines(ds[s]["text"]) for s in files}


def read_text(path: Path, encoding: str, corpus: str) -> str:
    """Whole file as text (line ends normalised); one-line errors as in `read_texts`."""
    return read_texts({"train": [path]}, encoding, corpus)["train"]


def _caused_by(e: BaseException | None, kind: type) -> bool:
    while e is not None:
        if isinstance(e, kind):
            return True
        e = e.__cause__ or e.__context__
    return False


def _raise_decode_error(paths: list[Path], encoding: str) -> None:
    for p in paths:
        try:
            p.read_bytes().decode(encoding)
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not valid {encoding} at byte offset {e.start}; "
                            f"set data.encoding (e.g. --config.data.encoding=latin-1)") from None


def join_lines(texts: list[str]) -> str:
    """Concatenate texts, each but the last ending in a newline so lines never merge."""
    return "".join(t if t.endswith("\n") or i == len(texts) - 1 else t + "\n" for i, t in enumerate(texts))


# --- tokens and vocabulary ----------------------------------------------------------------


def word_tokens(text: str) -> list[str]:
    """Mikolov/Zaremba tokenisation: whitespace-split words, each line ends in `<eos>`."""
    out = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        out.extend(line.split())
        out.append(EOS)
    return out


def ptb_char_tokens(text: str) -> list[str]:
    """PTB as characters: each line's words joined by '_' (a visible space), then `<eos>`."""
    out = []
    for line in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        out.extend(SPACE.join(line.split()))
        out.append(EOS)
    return out


def d2l_letters(text: str) -> str:
    """d2l's Time Machine preprocessing: runs of non-letters become one space; lower case."""
    return re.sub("[^A-Za-z]+", " ", text).lower()


def build_vocab(tokens: list[str]) -> list[str]:
    """Tokens by descending count, ties by token (Zaremba's reader order)."""
    counts = collections.Counter(tokens)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def encode(tokens: list[str], vocab: list[str], where: str) -> np.ndarray:
    """Token ids; a token outside `vocab` becomes `<unk>`, or is an error if `vocab` has none."""
    index = {t: i for i, t in enumerate(vocab)}
    unk = index.get(UNK)
    ids = np.empty(len(tokens), np.int32)
    for n, t in enumerate(tokens):
        i = index.get(t, unk)
        if i is None:
            raise DataError(f"{where}: token {t!r} (token {n:,} of the split) is not in the training vocabulary; "
                            f"set data.char_oov='unk' to map such tokens to <unk>")
        ids[n] = i
    return ids


def split_fractions(tokens: list[str], fractions: tuple[float, ...]) -> dict[str, list[str]]:
    """Contiguous train/valid/test runs of `tokens` in the given fractions (floor; test gets the rest)."""
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"config key 'data.split_fractions' = {tuple(fractions)!r}: "
                          f"expected three positive fractions (train, valid, test) summing to 1")
    n_train = int(len(tokens) * fractions[0])
    n_valid = int(len(tokens) * fractions[1])
    return {"train": tokens[:n_train], "valid": tokens[n_train:n_train + n_valid],
            "test": tokens[n_train + n_valid:]}


def make_splits(tokens: dict[str, list[str]], level: str, config: ConfigDict,
                where: dict[str, str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Vocabulary from train and the encoded splits, with the level's out-of-vocabulary rule.

    Word level always has `<unk>`. Character level adds `<unk>` when `data.char_oov` is
    'unk'; with 'error' a valid/test character unseen in train is an error.
    """
    vocab = build_vocab(tokens["train"])
    oov = config.data.char_oov
    if oov not in ("unk", "error"):
        raise ConfigError(f"config key 'data.char_oov' = {oov!r}: expected 'unk' or 'error'")
    if (level == "word" or oov == "unk") and UNK not in vocab:
        vocab.append(UNK)
    return vocab, {s: encode(t, vocab, where[s]) for s, t in tokens.items()}


def check_vocab(saved: list[str], vocab: list[str], where: Path) -> None:
    """One-line error unless the vocabulary a run saved (at `where`) is exactly `vocab` (same ids)."""
    if saved != vocab:
        i = next((i for i, (a, b) in enumerate(zip(saved, vocab)) if a != b), min(len(saved), len(vocab)))
        a = saved[i] if i < len(saved) else "(end)"
        b = vocab[i] if i < len(vocab) else "(end)"
        raise DataError(f"{where}: saved vocabulary ({len(saved):,} tokens) does not match this corpus's "
                        f"({len(vocab):,} tokens): id {i} is {a!r} there, {b!r} here; "
                        f"check data.corpus and the data.* keys")
