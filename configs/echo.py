"""Echo task (sequence-to-sequence, stateful): the target is the input bit stream delayed by 3 steps.

    rnnjax train --config configs/echo.py --workdir runs/echo

As in Erik Hallström's TensorFlow RNN tutorial: a 50,000-bit random stream per epoch cut
into 5 rows, truncated BPTT over 15-step windows with the carry of each of the 3 stacked
LSTM layers passed from window to window (so the echo crosses window boundaries).
summary.json holds `accuracy` on a fresh 10,000-bit stream, at positions >= echo_step of
each row (target >= 99.5%); echo.png shows input / target / prediction rows.
"""

from rnnjax.config import defaults


def get_config(preset=None):
    c = defaults()
    c.task = "echo"
    c.echo.echo_step = 3
    c.echo.train_length = 50_000
    c.echo.test_length = 10_000
    c.model.cell = "lstm"
    c.model.num_layers = 3
    c.model.hidden_size = 16
    c.model.embed_size = 4
    c.train.batch_size = 5
    c.train.seq_len = 15
    c.train.num_epochs = 5
    c.train.optimizer = "adam"
    c.train.learning_rate = 1e-2
    c.train.clip_norm = 5.0
    c.train.log_every = 100
    return c
