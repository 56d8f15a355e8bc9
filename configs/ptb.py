"""Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization", on PTB.

    rnnjax train --config configs/ptb.py:small  --workdir runs/ptb_small    # test ppl 114.5 in the paper
    rnnjax train --config configs/ptb.py:medium --workdir runs/ptb_medium   # test ppl 82.7
    rnnjax train --config configs/ptb.py:large  --workdir runs/ptb_large    # test ppl 78.4

All: 2 LSTM layers, batch 20, SGD with learning rate 1 on the paper's objective (the
batch-mean cross entropy summed over the unrolled steps: `train.time_sum_loss`; a
per-token mean would need lr x seq_len, as PyTorch's example's lr 20 does), global-norm
clipping, every parameter ~ U(-init_scale, init_scale), lr x decay_rate per epoch after
`decay_after_epochs`. Test perplexity is measured as in the paper's code: the whole
split read as one stream (batch 1), state carried throughout.
"""

from rnnjax.config import defaults

PRESETS = {
    # hidden, epochs, decay after, decay rate, dropout, clip, seq_len, init scale
    "small": (200, 13, 4, 0.5, 0.0, 5.0, 20, 0.1),
    "medium": (650, 39, 6, 0.8, 0.5, 5.0, 35, 0.05),
    "large": (1500, 55, 14, 1 / 1.15, 0.65, 10.0, 35, 0.04),
}


def get_config(preset=None):
    hidden, epochs, decay_after, decay_rate, dropout, clip, seq_len, init_scale = PRESETS[preset or "small"]
    c = defaults()
    c.data.corpus = "ptb"
    c.model.cell = "lstm"
    c.model.num_layers = 2
    c.model.hidden_size = hidden
    c.model.dropout = dropout
    c.model.init_scale = init_scale
    c.train.batch_size = 20
    c.train.seq_len = seq_len
    c.train.num_epochs = epochs
    c.train.optimizer = "sgd"
    c.train.learning_rate = 1.0
    c.train.time_sum_loss = True
    c.train.clip_norm = clip
    c.train.schedule = "step"
    c.train.decay_after_epochs = decay_after
    c.train.decay_rate = decay_rate
    c.train.log_every = 200
    c.eval.batch_size = 1
    c.eval.seq_len = 500
    return c
