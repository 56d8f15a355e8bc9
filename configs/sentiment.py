"""Sentence sentiment on rt-polarity (Pang & Lee 2005 "MR"): stacked GRU over padded batches.

    rnnjax train --config configs/sentiment.py --workdir runs/sentiment
    rnnjax train --config configs/sentiment.py:bidirectional --workdir runs/sentiment_bi

Embedding 128 -> GRU layers of 16, 8 and 4 units (the classic tutorial's stack) run with
sentence lengths -> the last real step's state -> one logit, binary cross entropy, Adam.
Split (seeded by `seed`): 10% of the 10,662 sentences are test; of the remaining 90%,
the last 10% are validation, which picks the epoch kept. summary.json holds
`test_accuracy` (target >= 75%; published LSTM/CNN results on this data are ~77-81%).
"""

from rnnjax.config import defaults

PRESETS = ("unidirectional", "bidirectional")


def get_config(preset=None):
    c = defaults()
    c.task = "sentiment"
    c.data.corpus = "rt-polarity"
    c.data.encoding = "latin-1"
    c.sentiment.test_fraction = 0.1
    c.sentiment.valid_fraction = 0.1
    c.sentiment.bidirectional = preset == "bidirectional"
    c.sentiment.pooling = "last"
    c.model.cell = "gru"
    c.model.num_layers = 3
    c.model.layer_sizes = (16, 8, 4)
    c.model.embed_size = 128
    c.model.dropout = 0.5
    c.train.batch_size = 64
    c.train.num_epochs = 10
    c.train.optimizer = "adam"
    c.train.learning_rate = 2e-3
    c.train.clip_norm = 5.0
    c.train.log_every = 50
    return c
