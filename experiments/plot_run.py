"""Plot one run's train and validation perplexity against epoch from its metrics.jsonl.

    python experiments/plot_run.py RUN_DIR OUT.png [--reference 114.5]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rnnjax.plots import pyplot
from rnnjax.records import read_metrics

plt = pyplot()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--reference", type=float, help="a published test perplexity to draw as a line")
    args = parser.parse_args()
    records = list(read_metrics(args.run_dir / "metrics.jsonl"))
    evals = [r for r in records if r.get("split") == "valid"]
    steps_per_epoch = evals[0]["step"] / evals[0]["epoch"]  # eval records carry fractional epochs
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split, style in (("train", "-"), ("valid", "o-"), ("test", "s")):
        rows = [r for r in records if r.get("split") == split]
        if rows:
            ax.plot([r["step"] / steps_per_epoch for r in rows], [r["perplexity"] for r in rows], style,
                    label=f"{split} (batch)" if split == "train" else split, ms=4,
                    lw=0.8 if split == "train" else 1.5, alpha=0.6 if split == "train" else 1.0)
    if args.reference:
        ax.axhline(args.reference, color="gray", ls="--", lw=1, label=f"published test {args.reference}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_title(args.run_dir.name)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)


if __name__ == "__main__":
    main()
