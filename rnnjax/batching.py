"""Batches for truncated BPTT, as pure functions of (epoch, index) so a run can resume anywhere.

Contiguous (Zaremba et al. 2014): the split is cut into `batch_size` rows read left to
right, so batch i+1 continues batch i and the RNN state is carried between them.
Random (d2l's random sampling): each epoch drops a random offset in [0, seq_len), cuts
the rest into seq_len windows and visits them in a random order; no state is carried.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Batch(NamedTuple):
    inputs: np.ndarray  # [B, T] int32
    targets: np.ndarray  # [B, T] int32


def steps_per_epoch(num_tokens: int, batch_size: int, seq_len: int, sampling: str) -> int:
    if sampling == "contiguous":
        return (num_tokens // batch_size - 1) // seq_len
    return ((num_tokens - seq_len) // seq_len) // batch_size


def carries_state(sampling: str) -> bool:
    """Whether consecutive batches continue each other (so the RNN state is carried)."""
    return sampling == "contiguous"


def train_batch(ids: np.ndarray, batch_size: int, seq_len: int, sampling: str, seed: int, epoch: int,
                index: int) -> Batch:
    """Batch `index` of `epoch`; the same arguments always give the same batch."""
    if sampling == "contiguous":
        row_len = len(ids) // batch_size
        rows = ids[: batch_size * row_len].reshape(batch_size, row_len)
        lo = index * seq_len
        return Batch(rows[:, lo : lo + seq_len], rows[:, lo + 1 : lo + seq_len + 1])
    rng = np.random.default_rng([seed, epoch, 7])
    offset = int(rng.integers(seq_len))
    num_windows = (len(ids) - offset - 1) // seq_len
    order = rng.permutation(num_windows)[index * batch_size : (index + 1) * batch_size]
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
