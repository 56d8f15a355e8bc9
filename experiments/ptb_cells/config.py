"""RNN vs GRU vs LSTM (and the parallel-scan min_gru, min_lstm) on PTB words: cell x layers x dropout
at a 2-core CPU budget.

    nice -n 10 rnnjax sweep --config experiments/ptb_cells/config.py --workdir runs/ptb_cells --jobs 1
    rnnjax report runs/ptb_cells --out experiments/ptb_cells

Budget (what a 2-core CPU shared with many other jobs, load average about 20, finishes
in about an hour for all 12 points; training ran at about 300 tokens/s): hidden 200
(Zaremba-small width), batch 20 x 20 steps, 150 steps = 60,000 training tokens, 0.065
of one epoch; Adam (lr 3e-3, global-norm clip 5), because
that early Zaremba's SGD schedule has not left its first epoch and the vanilla RNN
needs a per-cell learning rate under SGD. Validation and test read each split as 20
streams in chunks of 100 steps, state carried (Zaremba uses 1 stream; 20 streams
cost 20 cold starts, a few hundredths of a percent of the tokens).
"""

from rnnjax.config import defaults
from rnnjax.sweep import product, sweep


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "ptb"
    c.model.hidden_size = 200
    c.model.init_scale = 0.1
    c.train.batch_size = 20
    c.train.seq_len = 20
    c.train.max_steps = 150
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-3
    c.train.clip_norm = 5.0
    c.train.log_every = 25
    c.eval.batch_size = 20
    c.eval.seq_len = 100
    return c


def get_sweep():
    return product(
        sweep("config.model.cell", ["rnn_tanh", "gru", "lstm", "min_gru", "min_lstm"]),
        sweep("config.model.num_layers", [1, 2]),
        sweep("config.model.dropout", [0.0, 0.5]),
        sweep("config.seed", [0]),
    )
