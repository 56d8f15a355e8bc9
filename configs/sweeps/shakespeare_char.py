"""Tiny Shakespeare character benchmark: every cell to convergence (early stopping), 3 seeds.

    rnnjax sweep --config configs/sweeps/shakespeare_char.py --workdir experiments/shakespeare_char/runs \
        --data-dir ../shared/data --jobs 2
    rnnjax report experiments/shakespeare_char/runs

rnn_tanh, gru, lstm, min_gru and min_lstm, 2 layers, each parameter-matched to a 2x256 LSTM
(`sweep.match_params`), on Tiny Shakespeare (1.1M characters, the one file split 90/5/5 into
train/valid/test in order). Adam, learning rate 2e-3 for every cell (char-rnn's), global-norm
clip 5, batch 50 x 100 characters with the state carried, no dropout, default init. Validation
every epoch; training stops when validation has not improved for 3 epochs (`train.patience`)
or after 40 epochs, and the test split is scored with the best-validation checkpoint. Seeds
0, 1, 2 (the outer axis). Expected: losses near char-rnn's 1.395 nats (its 2x512 LSTM with
dropout on its own split) and minGRU/minLSTM's 1.548/1.555 (their 3-layer models, nanoGPT's
split); both are reference points, not reproductions of the same setup.
"""

from rnnjax.config import defaults
from rnnjax.sweep import product, sweep

CELLS = ["lstm", "gru", "rnn_tanh", "min_gru", "min_lstm"]


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "tinyshakespeare"
    c.model.cell = "lstm"
    c.model.num_layers = 2
    c.model.hidden_size = 256
    c.train.batch_size = 50
    c.train.seq_len = 100
    c.train.optimizer = "adam"
    c.train.learning_rate = 2e-3
    c.train.clip_norm = 5.0
    c.train.num_epochs = 40
    c.train.patience = 3
    c.train.log_every = 50
    c.eval.batch_size = 10
    c.eval.seq_len = 500
    c.checkpoint.keep = 2
    c.sweep.match_params = True
    return c


def get_sweep():
    return product(sweep("config.seed", [0, 1, 2]), sweep("config.model.cell", CELLS))
