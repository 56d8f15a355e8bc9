"""Figures and a table for a char-RNN run: validation loss against training time, train vs validation loss.

    python experiments/charrnn_report.py RUN_DIR OUT_DIR [--title TEXT]

Reads RUN_DIR/metrics.jsonl and summary.json (written by `rnnjax train`) and writes
OUT_DIR/loss_vs_time.png, OUT_DIR/train_vs_valid.png and OUT_DIR/valid_curve.md (every
validation pass: step, epoch, wall-clock seconds since the start of training, nats/char,
bits/char). Wall-clock time includes the evaluation passes themselves.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rnnjax.plots import pyplot
from rnnjax.records import read_metrics

plt = pyplot()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    records = list(read_metrics(args.run_dir / "metrics.jsonl"))
    train = [r for r in records if r["split"] == "train"]
    valid = [r for r in records if r["split"] == "valid"]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    title = args.title or args.run_dir.name

    fig, ax = plt.subplots(figsize=(7, 4.5))
    minutes = [r["wall_s"] / 60 for r in valid]
    ax.plot(minutes, [r["loss"] for r in valid], "o-")
    ax.set_xlabel("wall-clock minutes since training started (evaluations included)")
    ax.set_ylabel("validation loss (nats/char)")
    right = ax.secondary_yaxis("right", functions=(lambda n: n / math.log(2), lambda b: b * math.log(2)))
    right.set_ylabel("bits/char")
    ax.set_title(f"{title}: validation loss against training time")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out_dir / "loss_vs_time.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (batch loss at the logged step)",
            alpha=0.7)
    ax.plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-", label="validation (whole split)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/char)")
    ax.set_title(f"{title}: train vs validation loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(args.out_dir / "train_vs_valid.png", dpi=100)
    plt.close(fig)

    lines = ["| step | epoch | wall-clock s | valid nats/char | valid bits/char |", "|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['step']} | {r['epoch']:.2f} | {r['wall_s']:.0f} | {r['loss']:.4f} | {r['bpt']:.4f} |"
              for r in valid]
    (args.out_dir / "valid_curve.md").write_text("\n".join(lines) + "\n")
    summary = json.loads((args.run_dir / "summary.json").read_text())
    print(json.dumps({k: summary.get(k) for k in ("valid_loss", "test_loss", "steps", "epochs", "tokens_per_s",
                                                   "wall_s", "num_params")}))


if __name__ == "__main__":
    main()
