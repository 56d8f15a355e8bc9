"""A PyTorch `word_language_model` LM on PTB, imported into an rnnjax run directory and scored by `rnnjax eval`.

    python experiments/torch_import/import_word_lm.py [--steps 300] [--cell lstm] [--split test] \
        [--workdir runs/torch_import] [--data-dir DIR]

1. PyTorch side, as PyTorch's `word_language_model` example does it: PTB read into its
   `Dictionary` (ids in order of first appearance in train, valid, test; each line's words,
   then <eos>), its `RNNModel` (Embedding -> RNN/GRU/LSTM -> dropout -> Linear, tied),
   `--steps` truncated-BPTT steps of SGD (lr 20, clip 0.25, batch 20, bptt 35), and its
   `evaluate()`: the split as 10 streams read in 35-step chunks, the state carried.
2. rnnjax side: `interop.lm_params_from_torch` reads the weights, `reorder_vocab` renumbers
   the tokens to rnnjax's PTB vocabulary (by count), `lm_config` sets the `model.*` keys and
   `write_lm_run` writes the run directory (eval.batch_size 10, eval.seq_len 35, as above);
   then the command `rnnjax eval --workdir DIR --split SPLIT` scores it.

Both perplexities are printed; they agree to float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from rnnjax import config as config_lib
from rnnjax import interop
from rnnjax.data import load_corpus, resolve_data_dir

KINDS = {"rnn_tanh": "RNN", "rnn_relu": "RNN", "gru": "GRU", "lstm": "LSTM"}
EVAL_BATCH, BPTT = 10, 35  # the example's evaluation streams and chunk length


def read_ptb(ptb_dir: Path) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The example's `Corpus`: words in order of first appearance, and each split's ids."""
    words, index, splits = [], {}, {}
    for split in ("train", "valid", "test"):
        ids = []
        for line in (ptb_dir / f"ptb.{split}.txt").read_text(encoding="utf-8").splitlines():
            for word in line.split() + ["<eos>"]:
                if word not in index:
                    index[word] = len(words)
                    words.append(word)
                ids.append(index[word])
        splits[split] = torch.tensor(ids, dtype=torch.long)
    return words, splits


class RNNModel(torch.nn.Module):
    """The example's model: encoder -> rnn -> dropout -> decoder, the decoder tied to the encoder."""

    def __init__(self, cell: str, vocab: int, size: int, layers: int, dropout: float = 0.2):
        super().__init__()
        self.drop = torch.nn.Dropout(dropout)
        self.encoder = torch.nn.Embedding(vocab, size)
        extra = {"nonlinearity": cell.removeprefix("rnn_")} if KINDS[cell] == "RNN" else {}
        dropout_between = dropout if layers > 1 else 0.0  # PyTorch's RNN dropout acts between layers only
        self.rnn = getattr(torch.nn, KINDS[cell])(size, size, layers, dropout=dropout_between, **extra)
        self.decoder = torch.nn.Linear(size, vocab)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens: torch.Tensor, hidden=None):
        """Logits [T, B, V] of time-major `tokens` [T, B], and the final state."""
        out, hidden = self.rnn(self.drop(self.encoder(tokens)), hidden)
        return self.decoder(self.drop(out)), hidden


def streams(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """The example's `batchify`: `batch` contiguous streams as columns, [rows, batch]."""
    rows = len(ids) // batch
    return ids[: rows * batch].view(batch, rows).t().contiguous()


def detached(hidden):
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()


def train(model: RNNModel, ids: torch.Tensor, steps: int, lr: float = 20.0, clip: float = 0.25) -> float:
    """`steps` truncated-BPTT steps from the start of `ids` (batch 20, bptt 35, at most one epoch);
    the last step's loss."""
    data, hidden, loss = streams(ids, 20), None, torch.tensor(float("nan"))
    model.train()
    for start in range(0, min(steps * BPTT, len(data) - 1), BPTT):
        n = min(BPTT, len(data) - 1 - start)
        x, y = data[start : start + n], data[start + 1 : start + 1 + n]
        hidden = None if hidden is None else detached(hidden)
        logits, hidden = model(x, hidden)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        model.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
    return float(loss.detach())


@torch.no_grad()
def evaluate(model: RNNModel, ids: torch.Tensor) -> float:
    """Mean NLL per token (nats) of the example's `evaluate()`: 10 streams, 35-step chunks, state carried."""
    data, hidden, total = streams(ids, EVAL_BATCH), None, 0.0
    model.eval()
    for start in range(0, len(data) - 1, BPTT):
        n = min(BPTT, len(data) - 1 - start)
        x, y = data[start : start + n], data[start + 1 : start + 1 + n]
        logits, hidden = model(x, hidden)
        total += float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum"))
    return total / ((len(data) - 1) * EVAL_BATCH)


def import_run(model: RNNModel, cell: str, words: list[str], workdir: Path, data_dir: Path) -> Path:
    """Write `model` as an rnnjax run directory over rnnjax's PTB, evaluated like `evaluate` above."""
    config = config_lib.apply_overrides(config_lib.defaults(), {
        "data.corpus": "ptb", "eval.batch_size": str(EVAL_BATCH), "eval.seq_len": str(BPTT)})
    vocab = load_corpus(config, data_dir).vocab
    params = interop.reorder_vocab(interop.lm_params_from_torch(model, cell), words, vocab)
    return interop.write_lm_run(workdir, interop.lm_config(config, params, cell), vocab, params)


def rnnjax_eval(workdir: Path, split: str, data_dir: Path) -> tuple[list[str], dict]:
    """Run `rnnjax eval` on `workdir`; the command and its JSON result."""
    command = [sys.executable, "-m", "rnnjax", "eval", "--workdir", str(workdir), "--split", split,
               "--data-dir", str(data_dir)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"rnnjax eval failed:\n{out.stderr}")
    return command, json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cell", default="lstm", choices=list(KINDS))
    parser.add_argument("--size", type=int, default=128, help="embedding and hidden width (tied)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="training steps (0: the untrained model)")
    parser.add_argument("--split", default="test", choices=["valid", "test"])
    parser.add_argument("--workdir", default="runs/torch_import", help="the run directory to create (must be new)")
    parser.add_argument("--data-dir", help="holds ptb/ptb.{train,valid,test}.txt (default: rnnjax's, "
                        "$RNNJAX_DATA_DIR or ~/.cache/rnnjax/data)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    torch.manual_seed(args.seed)
    words, splits = read_ptb(data_dir / "ptb")
    model = RNNModel(args.cell, len(words), args.size, args.layers)
    print(f"PyTorch: {args.steps} training steps, last train loss {train(model, splits['train'], args.steps):.3f}")
    torch_ppl = math.exp(evaluate(model, splits[args.split]))
    workdir = import_run(model, args.cell, words, Path(args.workdir), data_dir)
    command, result = rnnjax_eval(workdir, args.split, data_dir)
    print(f"$ rnnjax {' '.join(command[3:])}\n{json.dumps(result)}")
    print(f"{args.split} perplexity: PyTorch {torch_ppl:.6f}, rnnjax eval {result['perplexity']:.6f} "
          f"(relative difference {abs(result['perplexity'] / torch_ppl - 1):.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
