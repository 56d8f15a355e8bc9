"""Batching: Zaremba's contiguous layout, resumable random/sequential sampling, eval coverage, padding."""

from __future__ import annotations

import numpy as np
import pytest

from rnnjax import batching


def zaremba_reader(raw_data, batch_size, num_steps):
    """`ptb_iterator` from Zaremba's reader.py (TensorFlow's PTB tutorial), verbatim in numpy."""
    raw_data = np.array(raw_data, dtype=np.int32)
    data_len = len(raw_data)
    batch_len = data_len // batch_size
    data = np.zeros([batch_size, batch_len], dtype=np.int32)
    for i in range(batch_size):
        data[i] = raw_data[batch_len * i : batch_len * (i + 1)]
    epoch_size = (batch_len - 1) // num_steps
    for i in range(epoch_size):
        yield data[:, i * num_steps : (i + 1) * num_steps], data[:, i * num_steps + 1 : (i + 1) * num_steps + 1]


@pytest.mark.parametrize("n,batch_size,seq_len", [(1003, 4, 7), (500, 1, 20), (929, 20, 5)])
def test_contiguous_matches_zaremba_reader(n, batch_size, seq_len):
    ids = np.random.default_rng(0).integers(0, 50, n).astype(np.int32)
    expected = list(zaremba_reader(ids, batch_size, seq_len))
    assert batching.steps_per_epoch(n, batch_size, seq_len, "contiguous") == len(expected)
    for index, (x, y) in enumerate(expected):
        for epoch in (0, 3):
            b = batching.train_batch(ids, batch_size, seq_len, "contiguous", 0, epoch, index)
            np.testing.assert_array_equal(b.inputs, x)
            np.testing.assert_array_equal(b.targets, y)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_sampling_is_a_pure_function_of_epoch_and_index(sampling):
    ids = np.arange(2000, dtype=np.int32)
    spe = batching.steps_per_epoch(len(ids), 5, 9, sampling)
    epoch = [batching.train_batch(ids, 5, 9, sampling, 1, 2, i) for i in range(spe)]
    # resuming at (epoch 2, index 3) in a fresh process gives exactly the batch a full run saw
    again = batching.train_batch(ids, 5, 9, sampling, 1, 2, 3)
    np.testing.assert_array_equal(again.inputs, epoch[3].inputs)
    np.testing.assert_array_equal(again.targets, epoch[3].targets)
    for b in epoch:
        assert b.inputs.shape == b.targets.shape == (5, 9)
        np.testing.assert_array_equal(b.targets, b.inputs + 1)  # targets are the next tokens
        assert b.targets.max() < len(ids)
    starts = np.concatenate([b.inputs[:, 0] for b in epoch])
    assert len(set(starts.tolist())) == len(starts)  # no window visited twice in an epoch
    firsts = {int(batching.train_batch(ids, 5, 9, sampling, 1, e, 0).inputs.min()) % 9 for e in range(8)}
    assert len(firsts) > 1  # a fresh offset per epoch
    other_seed = batching.train_batch(ids, 5, 9, sampling, 2, 2, 3)
    assert not np.array_equal(other_seed.inputs, epoch[3].inputs)


def test_sequential_batches_continue_each_other():
    ids = np.arange(3000, dtype=np.int32)
    spe = batching.steps_per_epoch(len(ids), 4, 10, "sequential")
    assert batching.carries_state("sequential") and not batching.carries_state("random")
    for epoch in range(3):
        batches = [batching.train_batch(ids, 4, 10, "sequential", 0, epoch, i) for i in range(spe)]
        for prev, nxt in zip(batches, batches[1:]):
            np.testing.assert_array_equal(nxt.inputs[:, 0], prev.inputs[:, -1] + 1)


@pytest.mark.parametrize("sampling", ["contiguous", "random", "sequential"])
def test_rows_select_part_of_the_same_batch(sampling):
    ids = np.arange(1500, dtype=np.int32)
    full = batching.train_batch(ids, 6, 8, sampling, 0, 1, 2)
    part = batching.train_batch(ids, 6, 8, sampling, 0, 1, 2, rows=slice(2, 4))
    np.testing.assert_array_equal(part.inputs, full.inputs[2:4])
    np.testing.assert_array_equal(part.targets, full.targets[2:4])


@pytest.mark.parametrize("n,batch_size,seq_len", [(1000, 1, 64), (1001, 3, 50), (57, 2, 100)])
def test_eval_chunks_score_every_token_once(n, batch_size, seq_len):
    ids = np.arange(n, dtype=np.int32)
    x, y, w = batching.eval_chunks(ids, batch_size, seq_len)
    row_len = n // batch_size
    scored = [(int(a), int(b)) for a, b, m in zip(x.ravel(), y.ravel(), w.ravel()) if m == 1]
    assert w.sum() == len(scored) == batch_size * (row_len - 1)
    expected = {(r * row_len + i, r * row_len + i + 1) for r in range(batch_size) for i in range(row_len - 1)}
    assert set(scored) == expected and len(set(scored)) == len(scored)


def test_pad_sequences():
    seqs = [[5, 6, 7], [8], [], [1, 2, 3, 4, 5]]
    b = batching.pad_sequences(seqs, pad_id=0)
    assert b.ids.dtype == np.int32 and b.ids.shape == (4, 5)
    np.testing.assert_array_equal(b.lengths, [3, 1, 0, 5])
    np.testing.assert_array_equal(b.ids[0], [5, 6, 7, 0, 0])
    np.testing.assert_array_equal(b.ids[2], [0] * 5)
    assert batching.pad_sequences(seqs, multiple=8).ids.shape == (4, 8)
    cut = batching.pad_sequences([np.array([1, 2, 3, 4])], pad_id=9, length=2)
    np.testing.assert_array_equal(cut.ids, [[1, 2]])
    np.testing.assert_array_equal(cut.lengths, [2])


@pytest.mark.parametrize("order", ["shuffle", "sorted", "bucketed"])
def test_sentence_batches_cover_every_sentence_once(order):
    lengths = np.random.default_rng(0).integers(1, 60, 203)
    batches = batching.sentence_batches(lengths, 16, order, seed=3, epoch=1)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(203))
    assert all(1 <= len(b) <= 16 for b in batches)
    again = batching.sentence_batches(lengths, 16, order, seed=3, epoch=1)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    other = batching.sentence_batches(lengths, 16, order, seed=3, epoch=2)
    assert not all(np.array_equal(a, b) for a, b in zip(batches, other))
    if order == "sorted":
        spans = sorted((lengths[b].min(), lengths[b].max()) for b in batches)
        assert all(hi <= lo2 for (_, hi), (lo2, _) in zip(spans, spans[1:]))  # batches do not overlap in length
    if order == "bucketed":
        assert all(len(set((lengths[b] // 10).tolist())) == 1 for b in batches)


def test_sentence_batches_without_seed_keep_order():
    lengths = np.array([5, 1, 3, 2])
    assert [b.tolist() for b in batching.sentence_batches(lengths, 2, "shuffle", None)] == [[0, 1], [2, 3]]
    assert [b.tolist() for b in batching.sentence_batches(lengths, 2, "sorted", None)] == [[1, 3], [2, 0]]
    with pytest.raises(ValueError, match="order"):
        batching.sentence_batches(lengths, 2, "by-magic", None)
