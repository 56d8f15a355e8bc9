"""PTB word benchmark, step 2 of 2: every cell at its chosen rate, full recipe, 3 seeds.

    rnnjax sweep --config configs/sweeps/ptb_word.py --workdir experiments/ptb_word/runs \
        --data-dir ../shared/data --jobs 2
    rnnjax report experiments/ptb_word/runs

Zaremba-small's recipe (2 layers, batch 20, 20 unrolled steps, SGD on the time-summed loss,
global-norm clip 5, every parameter ~ U(-0.1, 0.1), no dropout, 13 epochs, the rate halved
after each epoch from epoch 5 on) for rnn_tanh, gru, lstm, min_gru and min_lstm, each
parameter-matched to the 2x200 LSTM (`sweep.match_params`), each at the learning rate that
step 1 (`ptb_word_lr.py`, one epoch, validation split) chose: lstm 1.0, gru 0.5, rnn_tanh,
min_gru and min_lstm 0.25. Seeds 0, 1, 2; the seed is the outer axis, so a partial sweep
already holds one run of every cell. Expected: the LSTM row is Zaremba-small, test perplexity
within 2% of the published 114.5 (valid 120.7); one seed reproduced 114.24 before.
"""

from pathlib import Path

from rnnjax.config import load
from rnnjax.sweep import product, sweep, zipped

RATES = {"lstm": 1.0, "gru": 0.5, "rnn_tanh": 0.25, "min_gru": 0.25, "min_lstm": 0.25}


def get_config(preset=None):
    c = load(str(Path(__file__).with_name("ptb_word_lr.py")))  # the recipe of step 1
    c.train.num_epochs = 13
    return c


def get_sweep():
    return product(
        sweep("config.seed", [0, 1, 2]),
        zipped(sweep("config.model.cell", list(RATES)), sweep("config.train.learning_rate", list(RATES.values()))),
    )
