"""Sine-wave regression (many-to-one): predict sin(x) at the next point from the previous 10 samples.

    rnnjax train --config configs/sine.py --workdir runs/sine

x is sampled every 0.01; the 10,000 training points are x = 0 .. 99.99 and the 1,000
test points follow the train range. Model: 2-layer LSTM with 30 units and a linear
read-out of the last step, MSE loss. summary.json holds `test_mse` (target < 1e-4) and
two baselines (predict the train mean; repeat the last input); sine_test.png plots
predicted against true on the test range.
"""

from rnnjax.config import defaults


def get_config(preset=None):
    c = defaults()
    c.task = "sine"
    c.model.cell = "lstm"
    c.model.num_layers = 2
    c.model.hidden_size = 30
    c.train.batch_size = 32
    c.train.num_epochs = 20
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-3
    c.train.schedule = "cosine"
    c.train.clip_norm = 1.0
    c.train.log_every = 100
    return c
