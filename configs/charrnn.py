"""Character-level language models (char-RNN) and text generation.

    rnnjax train --config configs/charrnn.py:anna --workdir runs/anna
    rnnjax sample --workdir runs/anna --prime "Far" --length 500 --temperature 0.8

Presets:
  anna             Udacity's char-RNN on Anna Karenina: 2x512 LSTM, batch 100, 100 steps,
                   Adam 1e-3, global-norm clip 5, dropout 0.5, a checkpoint every 200
                   steps; prime "Far".
  tinyshakespeare  Karpathy's char-rnn defaults: 2x128 LSTM, batch 50, 50 steps, lr 2e-3
                   (Adam here, RMSProp there), clip 5, lr x0.97 per epoch after 10 epochs.
  jaychou          d2l's Chinese lyrics corpus, d2l style: 1x256 LSTM, 35 steps, batch 32,
                   random-offset sampling (no state carried), SGD lr 1, clip 1; prime "分开".
  timemachine      d2l's The Time Machine, same d2l recipe; prime "time traveller".

Every preset prints a short sample at each evaluation (`eval.sample_length`; set it to 0
in sweeps). Losses in metrics.jsonl are nats/char; `bpt` is bits/char.
"""

from rnnjax.config import defaults

PRESETS = ("anna", "tinyshakespeare", "jaychou", "timemachine")


def get_config(preset=None):
    preset = preset or "tinyshakespeare"
    c = defaults()
    c.data.corpus = preset
    c.model.cell = "lstm"
    c.train.optimizer = "adam"
    c.train.log_every = 50
    c.eval.batch_size = 10
    c.eval.seq_len = 500
    c.eval.sample_length = 200
    if preset == "anna":
        c.model.num_layers = 2
        c.model.hidden_size = 512
        c.model.dropout = 0.5
        c.train.batch_size = 100
        c.train.seq_len = 100
        c.train.learning_rate = 1e-3
        c.train.clip_norm = 5.0
        c.train.num_epochs = 20
        c.eval.sample_prime = "Far"
        c.checkpoint.every_steps = 200
    elif preset == "tinyshakespeare":
        c.model.num_layers = 2
        c.model.hidden_size = 128
        c.train.batch_size = 50
        c.train.seq_len = 50
        c.train.learning_rate = 2e-3
        c.train.clip_norm = 5.0
        c.train.num_epochs = 50
        c.train.schedule = "step"
        c.train.decay_after_epochs = 10
        c.train.decay_rate = 0.97
        c.eval.sample_prime = "ROMEO:"
    else:  # jaychou, timemachine: d2l (Dive into Deep Learning) chapter 9
        c.model.num_layers = 1
        c.model.hidden_size = 256
        c.data.sampling = "random"
        c.train.batch_size = 32
        c.train.seq_len = 35
        c.train.optimizer = "sgd"
        c.train.learning_rate = 1.0
        c.train.clip_norm = 1.0
        c.train.num_epochs = 500
        c.train.log_every = 500
        c.eval.batch_size = 1
        c.eval.every_epochs = 50
        c.eval.sample_length = 50
        c.eval.sample_prime = "分开" if preset == "jaychou" else "time traveller"
    return c
