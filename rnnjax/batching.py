"""Batches for truncated BPTT, as pure functions of (epoch, index) so a run can resume anywhere.

Contiguous (Zaremba et al. 2014): the split is cut into `batch_size` rows read left to
right, so batch i+1 continues batch i and the RNN state is carried between them.
Sequential (d2l's sequential partitioning): as contiguous, after dropping a random offset
in [0, seq_len) drawn per epoch from the seed; state is carried.
Random (d2l's random sampling): each epoch drops a random offset in [0, seq_len), cuts
the rest into seq_len windows and visits them in a random order; no state is carried.

Sentence-level tasks use `pad_sequences` (variable-length id sequences -> [B, T] ids plus
lengths) and `sentence_batches` (which sentences go in which batch: shuffled,
length-sorted or bucketed, again a pure function of (seed, epoch)).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class Batch(NamedTuple):
    inputs: np.ndarray  # [B, T] int32
    targets: np.ndarray  # [B, T] int32


def steps_per_epoch(num_tokens: int, batch_size: int, seq_len: int, sampling: str) -> int:
    if sampling == "contiguous":
        return (num_tokens // batch_size - 1) // seq_len
    if sampling == "sequential":
        return (num_tokens - seq_len) // batch_size // seq_len
    return ((num_tokens - seq_len) // seq_len) // batch_size


def carries_state(sampling: str) -> bool:
    """Whether consecutive batches continue each other (so the RNN state is carried)."""
    return sampling in ("contiguous", "sequential")


def train_batch(ids: np.ndarray, batch_size: int, seq_len: int, sampling: str, seed: int, epoch: int,
                index: int, rows: slice = slice(None)) -> Batch:
    """Batch `index` of `epoch`; the same arguments always give the same batch.

    `rows` picks rows of that batch, so a process builds only the rows its devices hold.
    """
    if sampling == "contiguous":
        row_len = len(ids) // batch_size
        streams = ids[: batch_size * row_len].reshape(batch_size, row_len)[rows]
        lo = index * seq_len
        return Batch(streams[:, lo : lo + seq_len], streams[:, lo + 1 : lo + seq_len + 1])
    rng = np.random.default_rng([seed, epoch, 7])
    offset = int(rng.integers(seq_len))
    if sampling == "sequential":
        row_len = (len(ids) - seq_len) // batch_size  # the same for every offset
        lo = offset + index * seq_len + np.arange(batch_size)[rows, None] * row_len
        window = lo + np.arange(seq_len)[None, :]
        return Batch(ids[window], ids[window + 1])
    num_windows = (len(ids) - offset - 1) // seq_len
    order = rng.permutation(num_windows)[index * batch_size : (index + 1) * batch_size][rows]
    starts = offset + order * seq_len
    window = starts[:, None] + np.arange(seq_len)[None, :]
    return Batch(ids[window], ids[window + 1])


def eval_chunks(ids: np.ndarray, batch_size: int, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A split as `batch_size` streams cut into chunks of `seq_len` steps, padded at the end.

    Returns (inputs, targets, weights), each [num_chunks, B, T]; weights are 1 on real
    predictions and 0 on padding, so every row's tokens (all but the first) are scored.
    """
    row_len = len(ids) // batch_size
    rows = ids[: batch_size * row_len].reshape(batch_size, row_len)
    n_pred = row_len - 1
    n_chunks = -(-n_pred // seq_len)
    pad = n_chunks * seq_len - n_pred
    x = np.pad(rows[:, :-1], ((0, 0), (0, pad)))
    y = np.pad(rows[:, 1:], ((0, 0), (0, pad)))
    w = np.pad(np.ones((batch_size, n_pred), np.float32), ((0, 0), (0, pad)))

    def chunked(a):
        return a.reshape(batch_size, n_chunks, seq_len).transpose(1, 0, 2)

    return chunked(x), chunked(y), chunked(w)


class PaddedBatch(NamedTuple):
    ids: np.ndarray  # [B, T] int32; positions at or after a row's length hold pad_id
    lengths: np.ndarray  # [B] int32, each in [0, T]


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = 0, length: int | None = None,
                  multiple: int = 1) -> PaddedBatch:
    """Variable-length id sequences as one padded [B, T] int32 array plus their lengths.

    T is `length` if given (longer sequences are cut to it), else the longest sequence
    rounded up to a multiple of `multiple` (fewer distinct shapes, so fewer recompilations).
    """
    lengths = np.array([len(s) for s in seqs], np.int32)
    if length is None:
        longest = int(lengths.max(initial=0))
        length = -(-longest // multiple) * multiple
    lengths = np.minimum(lengths, length)
    ids = np.full((len(seqs), length), pad_id, np.int32)
    for row, (seq, n) in enumerate(zip(seqs, lengths)):
        ids[row, :n] = np.asarray(seq[:n], np.int32)
    return PaddedBatch(ids, lengths)


def sentence_batches(lengths: np.ndarray, batch_size: int, order: str, seed: int | None, epoch: int = 0,
                     bucket_width: int = 10) -> list[np.ndarray]:
    """Indices of the sentences in each batch of one epoch; every sentence exactly once.

    order: "shuffle" (random batches), "sorted" (consecutive sentences by length, so each
    batch needs little padding) or "bucketed" (sentences grouped by length // bucket_width,
    shuffled within a group, so batches mix similar lengths with some randomness). With a
    `seed`, sentence and batch order are shuffled per epoch from (seed, epoch); with
    `seed=None` nothing is shuffled (for evaluation). The last batch may be smaller.
    """
    lengths = np.asarray(lengths)
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch, 11]) if seed is not None else None
    perm = rng.permutation(n) if rng is not None else np.arange(n)
    if order == "shuffle":
        return [perm[i : i + batch_size] for i in range(0, n, batch_size)]
    if order == "sorted":
        ranked = perm[np.argsort(lengths[perm], kind="stable")]
        batches = [ranked[i : i + batch_size] for i in range(0, n, batch_size)]
    elif order == "bucketed":
        buckets = lengths[perm] // bucket_width
        batches = []
        for b in np.unique(buckets):
            members = perm[buckets == b]
            batches += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    else:
        raise ValueError(f"sentence batch order {order!r}: expected 'shuffle', 'sorted' or 'bucketed'")
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def minibatch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of `n` examples in `epoch`: a function of (seed, epoch) alone, so a resumed
    run draws the same minibatches."""
    return np.random.default_rng([seed, epoch]).permutation(n)
