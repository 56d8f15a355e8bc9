"""RNN vs GRU vs LSTM on PTB characters (`ptb_char`), in bits per character.

    nice -n 10 rnnjax sweep --config experiments/char_cells/config.py --workdir runs/char_cells --jobs 1
    rnnjax report runs/char_cells --out experiments/char_cells

The same grid as experiments/ptb_cells (cell x layers x dropout, hidden 200) on the
character-level PTB (5.0M training characters, words joined by '_', one <eos> per line).
Budget (a 2-core CPU shared with several other jobs, about an hour for all 12 points):
batch 32 x 100 characters, 300 Adam steps (lr 3e-3, global-norm clip 5) = 960,000
training characters, 0.19 of one epoch. Validation and test: every character of each
split, read as 10 streams in chunks of 500, state carried.
"""

from rnnjax.config import defaults
from rnnjax.sweep import product, sweep


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "ptb_char"
    c.model.hidden_size = 200
    c.model.init_scale = 0.1
    c.train.batch_size = 32
    c.train.seq_len = 100
    c.train.max_steps = 300
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-3
    c.train.clip_norm = 5.0
    c.train.log_every = 25
    c.eval.batch_size = 10
    c.eval.seq_len = 500
    c.eval.sample_length = 0
    return c


def get_sweep():
    return product(
        sweep("config.model.cell", ["rnn_tanh", "gru", "lstm", "min_gru", "min_lstm"]),
        sweep("config.model.num_layers", [1, 2]),
        sweep("config.model.dropout", [0.0, 0.5]),
        sweep("config.seed", [0]),
    )
