"""Quick sweep: cell x layers x dropout on the generated Markov corpus (no download).

    rnnjax sweep --config configs/sweeps/quick.py --workdir runs/quick --jobs 2

12 small runs (hidden 64, 3 epochs = 291 Adam steps each). Measured: 4 min 48 s for the
whole sweep with --jobs 2 on 2 CPU cores shared with other jobs (nice 10, load average ~8).
`runs/quick/results.md` then ranks the cells; the source's exact perplexity floor is
`floor_ppl` in each run's summary.json.
"""

from rnnjax.config import defaults
from rnnjax.sweep import product, sweep


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "synthetic"
    c.data.synthetic_train_tokens = 100_000
    c.data.synthetic_eval_tokens = 10_000
    c.model.hidden_size = 64
    c.model.embed_size = 32
    c.train.batch_size = 32
    c.train.seq_len = 32
    c.train.num_epochs = 3
    c.train.max_steps = 300
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-3
    c.train.clip_norm = 1.0
    c.train.log_every = 50
    c.eval.every_steps = 100
    c.eval.batch_size = 8
    c.eval.seq_len = 250
    return c


def get_sweep():
    return product(
        sweep("config.model.cell", ["rnn_tanh", "gru", "lstm"]),
        sweep("config.model.num_layers", [1, 2]),
        sweep("config.model.dropout", [0.0, 0.3]),
        sweep("config.seed", [0]),
    )
