"""PTB word benchmark, step 1 of 2: each cell's learning rate, chosen on validation at a short budget.

    rnnjax sweep --config configs/sweeps/ptb_word_lr.py --workdir experiments/ptb_word/lr_runs \
        --data-dir ../shared/data
    rnnjax report experiments/ptb_word/lr_runs

Zaremba-small's recipe (2 layers, batch 20, 20 unrolled steps, SGD on the time-summed
loss, global-norm clip 5, every parameter ~ U(-0.1, 0.1), no dropout) for rnn_tanh, gru,
lstm, min_gru and min_lstm, each parameter-matched to the 2x200 LSTM (`sweep.match_params`),
at learning rates {0.1, 0.25, 0.5, 1, 2}, seed 0, for ONE epoch (2,323 steps, 929,589
tokens; the step decay of the full recipe only starts after epoch 4, so the rate is
constant here). Rule: a cell's rate is the one with the lowest validation perplexity after
that epoch; a point whose loss is non-finite, or whose validation perplexity exceeds the
vocabulary size (10,000: worse than a uniform guess), counts as diverged. The grid began as {0.5, 1, 2};
0.1 and 0.25 were added when the GRU's best rate sat at its low edge and the tanh RNN
diverged at 0.5 (the first 15 points are the same runs either way). Step 2 (`ptb_word.py`) trains each
cell at its rate for the full 13 epochs, 3 seeds.
"""

from rnnjax.config import defaults
from rnnjax.sweep import product, sweep


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "ptb"
    c.model.cell = "lstm"
    c.model.num_layers = 2
    c.model.hidden_size = 200  # the LSTM's; other cells get the hidden size of equal parameter count
    c.model.dropout = 0.0
    c.model.init_scale = 0.1
    c.train.batch_size = 20
    c.train.seq_len = 20
    c.train.num_epochs = 1
    c.train.optimizer = "sgd"
    c.train.learning_rate = 1.0
    c.train.time_sum_loss = True
    c.train.clip_norm = 5.0
    c.train.schedule = "step"
    c.train.decay_after_epochs = 4
    c.train.decay_rate = 0.5
    c.train.log_every = 200
    c.eval.batch_size = 1
    c.eval.seq_len = 500
    c.checkpoint.keep = 1
    c.checkpoint.keep_best = 0
    c.sweep.match_params = True
    return c


def get_sweep():
    return product(
        sweep("config.model.cell", ["lstm", "gru", "rnn_tanh", "min_gru", "min_lstm"]),
        sweep("config.train.learning_rate", [0.1, 0.25, 0.5, 1.0, 2.0]),
        sweep("config.seed", [0]),
    )
