"""Tiny Shakespeare ablation: how deep, how much dropout. Every cell x layers x dropout, 1 seed.

    rnnjax sweep --config configs/sweeps/shakespeare_char_ablation.py \
        --workdir experiments/shakespeare_char/ablation_runs --data-dir ../shared/data --jobs 2
    rnnjax report experiments/shakespeare_char/ablation_runs

The recipe of `shakespeare_char.py` (Adam 2e-3, clip 5, batch 50 x 100, early stopping
with patience 3, at most 40 epochs, test at the best-validation checkpoint) for rnn_tanh,
gru, lstm, min_gru and min_lstm with 1, 2 or 3 layers and (Zaremba) dropout 0 or 0.3,
seed 0. At each depth every cell is parameter-matched to the LSTM of that depth with 256
units per layer. The (2 layers, dropout 0) points are seed 0 of the main grid: the same
config key for key, so their run directories were copied from `runs/` (without checkpoints)
instead of being trained again, and the sweep skips them as done:

    for c in lstm gru rnn_tanh min_gru min_lstm; do
        mkdir -p "ablation_runs/dropout=0,layers=2,cell=$c"
        cp runs/seed=0,cell=$c/{config,metrics,status,summary,train,vocab}.* "ablation_runs/dropout=0,layers=2,cell=$c/"
    done
"""

from pathlib import Path

from rnnjax.config import load
from rnnjax.sweep import product, sweep

CELLS = ["lstm", "gru", "rnn_tanh", "min_gru", "min_lstm"]


def get_config(preset=None):
    return load(str(Path(__file__).with_name("shakespeare_char.py")))


def get_sweep():
    return product(
        sweep("config.model.dropout", [0.0, 0.3]),
        sweep("config.model.num_layers", [1, 2, 3]),
        sweep("config.model.cell", CELLS),
    )
