"""Sentence sentiment (many-to-one classification over padded batches), run by `task = "sentiment"`.

    rnnjax train --config configs/sentiment.py --workdir runs/sentiment

Data: `rnnjax.data.load_sentences` (rt-polarity: 5,331 negative + 5,331 positive
sentences, latin-1). Split: a permutation seeded by `seed` puts the first
`sentiment.test_fraction` of the sentences in test and the rest in train; the last
`sentiment.valid_fraction` of that train part is held out as validation, which picks the
epoch whose parameters are kept and scored on test. The vocabulary (`<pad>` = 0,
`<unk>` = 1, then train words seen at least `sentiment.min_count` times) comes from the
train part only.

Model: embedding -> stacked recurrent layers of sizes `model.layer_sizes` (optionally
bidirectional) run with per-sentence `lengths`, so padding never reaches the state ->
the last real step's state ("last"; forward and backward states when bidirectional) or
the mean of the outputs over real steps ("mean") -> one logit, binary cross entropy.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import batching, loop, recurrent, steps
from rnnjax.config import ConfigDict, layer_sizes
from rnnjax.data import build_vocab, load_sentences
from rnnjax.errors import ConfigError
from rnnjax.model import embed_size, model_cell
from rnnjax.rundir import Run

Array = jax.Array
PAD, UNK = "<pad>", "<unk>"


class Split(NamedTuple):
    ids: np.ndarray  # [N, T] int32, padded with 0
    lengths: np.ndarray  # [N] int32
    labels: np.ndarray  # [N] float32, 1 = positive


class Classifier(NamedTuple):
    init: Callable[[Array], dict]
    apply: Callable[..., Array]  # (params, ids [B, T], lengths [B], key=None) -> logits [B]


def split_indices(n: int, config: ConfigDict) -> dict[str, np.ndarray]:
    """Seeded train / valid / test indices of `n` sentences (see the module docstring)."""
    s = config.sentiment
    for key, value in (("test_fraction", s.test_fraction), ("valid_fraction", s.valid_fraction)):
        if not 0 < value < 1:
            raise ConfigError(f"config key 'sentiment.{key}' = {value!r}: expected a fraction in (0, 1)")
    perm = np.random.default_rng([config.seed, 2024]).permutation(n)
    n_test = int(round(n * s.test_fraction))
    train = perm[n_test:]
    n_valid = int(round(len(train) * s.valid_fraction))
    return {"train": train[: len(train) - n_valid], "valid": train[len(train) - n_valid :], "test": perm[:n_test]}


def sentence_vocab(sentences: list[list[str]], min_count: int) -> list[str]:
    words = [w for sentence in sentences for w in sentence]
    counts = collections.Counter(words)
    return [PAD, UNK] + [w for w in build_vocab(words) if counts[w] >= min_count]


def encode_split(sentences: list[list[str]], labels: np.ndarray, vocab: list[str], length: int) -> Split:
    index = {w: i for i, w in enumerate(vocab)}
    seqs = [[index.get(w, 1) for w in words] for words in sentences]
    padded = batching.pad_sequences(seqs, pad_id=0, length=length)
    return Split(padded.ids, padded.lengths, labels.astype(np.float32))


def make_classifier(config: ConfigDict, vocab_size: int) -> Classifier:
    """Embedding -> (bi)directional recurrent stack over padded ids with lengths -> one logit."""
    cell = model_cell(config)
    sizes = layer_sizes(config)
    n_embed = embed_size(config)
    bidirectional = config.sentiment.bidirectional
    pooling = config.sentiment.pooling
    if pooling not in ("last", "mean"):
        raise ConfigError(f"config key 'sentiment.pooling' = {pooling!r}: expected 'last' or 'mean'")
    rate, variational = config.model.dropout, config.model.dropout_type == "variational"
    n_features = sizes[-1] * (2 if bidirectional else 1)

    def init(key: Array) -> dict:
        k_embed, k_layers, _, k_out = jax.random.split(key, 4)  # 4 keys: the same draws as before the stacks moved
        bound = 1.0 / n_features**0.5
        return {"embed": jax.random.uniform(k_embed, (vocab_size, n_embed), jnp.float32, -0.1, 0.1),
                "layers": recurrent.init_stack(cell, k_layers, n_embed, sizes, bidirectional),
                "out": {"w": jax.random.uniform(k_out, (n_features,), jnp.float32, -bound, bound),
                        "b": jnp.zeros((), jnp.float32)}}

    def apply(params: dict, ids: Array, lengths: Array, key: Array | None = None) -> Array:
        x = params["embed"][ids.T]  # [T, B, E]
        carries = recurrent.stack_initial_carry(cell, ids.shape[0], sizes, bidirectional)
        carries, ys = recurrent.run_stack(cell, params["layers"], carries, x, lengths=lengths, dropout=rate,
                                          variational=variational, key=key, bidirectional=bidirectional)
        top = carries[-1]
        last = jnp.concatenate([top[0].h, top[1].h], axis=-1) if bidirectional else top.h
        # padded steps output 0, so the sum over time is the sum over real steps
        features = last if pooling == "last" else ys.sum(0) / lengths[:, None].astype(ys.dtype)
        return features @ params["out"]["w"] + params["out"]["b"]

    return Classifier(init, apply)


def make(config: ConfigDict, run: Run, data_dir: Path, log: Callable[[str], None]) -> loop.Task:
    if config.checkpoint.keep_best < 1:
        raise ConfigError("config key 'checkpoint.keep_best' = 0: the sentiment task reports the epoch of best "
                          "validation accuracy and needs that checkpoint kept (expected at least 1)")
    corpus = load_sentences(config, data_dir)
    idx = split_indices(len(corpus.sentences), config)
    sentences = {s: [corpus.sentences[i] for i in ix] for s, ix in idx.items()}
    vocab = sentence_vocab(sentences["train"], config.sentiment.min_count)
    run.write_vocab(vocab)
    length = max(len(words) for words in corpus.sentences)
    data = {s: encode_split(sentences[s], corpus.labels[idx[s]], vocab, length) for s in idx}
    clf = make_classifier(config, len(vocab))
    logits_fn = jax.jit(clf.apply)
    t, train = config.train, data["train"]
    n = len(train.ids)
    spe = n // t.batch_size
    if spe < 1:
        raise ConfigError(f"config key 'train.batch_size' = {t.batch_size}: larger than the {n} training sentences")

    def objective(params, carry, batch, key):
        ids, lengths, labels = batch
        loss = optax.sigmoid_binary_cross_entropy(clf.apply(params, ids, lengths, key), labels).mean()
        return loss, (carry, loss)

    order = functools.lru_cache(maxsize=1)(lambda epoch: batching.minibatch_order(config.seed, epoch, n))

    def batch(epoch: int, index: int, rows: slice):
        i = order(epoch)[index * t.batch_size:(index + 1) * t.batch_size][rows]
        return train.ids[i], train.lengths[i], train.labels[i]

    def scores(params, split: Split) -> dict:
        logits = np.concatenate([np.asarray(logits_fn(params, split.ids[i:i + 1000], split.lengths[i:i + 1000]))
                                 for i in range(0, len(split.ids), 1000)])
        return {"loss": float(optax.sigmoid_binary_cross_entropy(logits, split.labels).mean()),
                "accuracy": float(((logits > 0) == (split.labels > 0.5)).mean())}

    def evaluate(params, step: int, train_loss: float) -> loop.Evaluation:
        records = {s: scores(params, data[s]) for s in ("valid", "test")}
        return loop.Evaluation(records, records["valid"]["accuracy"],
                               f"epoch {step / spe:.2f}: train loss {train_loss:.4f}, valid accuracy "
                               f"{records['valid']['accuracy']:.4f}, test accuracy {records['test']['accuracy']:.4f}")

    def finish(params, best_params, tally) -> tuple[dict, dict]:
        params, step = best_params()
        valid, test = scores(params, data["valid"]), scores(params, data["test"])
        test_labels = data["test"].labels
        return {}, {"test_accuracy": test["accuracy"], "valid_accuracy": valid["accuracy"],
                    "train_accuracy": scores(params, train)["accuracy"], "epoch_kept": step / spe,
                    "majority_baseline_accuracy": float(max(test_labels.mean(), 1 - test_labels.mean())),
                    "sentences": {s: int(len(ix)) for s, ix in idx.items()}, "vocab_size": len(vocab)}

    return loop.Task(
        name="sentiment", model=steps.Model(clf.init, lambda batch_size: ()), objective=objective,
        steps_per_epoch=spe, batch=batch, fresh_carry=lambda index: False, evaluate=evaluate, finish=finish,
        best=("valid_accuracy", "max"), headline=("test_accuracy", "max"), identity={"vocab": vocab},
        tokens_per_step=None,
        describe=f"{corpus.name}: {len(idx['train']):,} train / {len(idx['valid']):,} valid / {len(idx['test']):,} "
                 f"test sentences, vocab {len(vocab):,}, padded to {length}; {config.model.cell} {layer_sizes(config)}"
                 f"{' bidirectional' if config.sentiment.bidirectional else ''}")
