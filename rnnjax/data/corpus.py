"""What the loaders return: a `Corpus` of token ids, or `Sentences` with their labels.

Their own module so that the registered corpora and the user's sources both build them
without importing each other.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Corpus(NamedTuple):
    """A token-level corpus: one contiguous int32 array per split and the vocabulary built from train."""

    name: str
    level: str  # "word" | "char" | "symbol"
    vocab: list[str]
    splits: dict[str, np.ndarray]  # "train" | "valid" | "test" -> int32 token ids
    floor_ppl: float | None = None  # exact perplexity floor, for generated corpora
    files: dict[str, tuple[str, ...]] | None = None  # split -> files its tokens come from; None if generated
    # what the run read, for its record: {"files": {file: SHA-256}}, and for hub: "revision" (asked) and
    # "commit" (loaded); None if generated
    provenance: dict | None = None

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


class Sentences(NamedTuple):
    """A sentence-level corpus: whitespace tokens of each sentence and its label."""

    name: str
    sentences: list[list[str]]
    labels: np.ndarray  # int32 index into label_names
    label_names: list[str]
    files: tuple[str, ...]
