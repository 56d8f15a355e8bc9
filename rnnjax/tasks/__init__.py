"""What `rnnjax train` runs, by `task`: one module per task, one table, one loop (`rnnjax.loop`).

    rnnjax train --config configs/ptb.py:small  --workdir runs/ptb_small   # lm: language model
    rnnjax train --config configs/sine.py       --workdir runs/sine        # many-to-one regression
    rnnjax train --config configs/echo.py       --workdir runs/echo        # seq2seq, TBPTT, carried state
    rnnjax train --config configs/sentiment.py  --workdir runs/sentiment   # padded sentence classification

`TASKS[name](config, run, data_dir, log)` builds a `loop.Task`: its data, model, objective
and evaluation. The loop adds checkpoints, resume, signals, non-finite handling, metrics,
progress and data parallelism, the same for all of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from rnnjax import loop
from rnnjax.rundir import Run
from rnnjax.tasks import echo, lm, sentiment, sine

TASKS: dict[str, Callable[..., loop.Task]] = {"lm": lm.make, "sine": sine.make, "echo": echo.make,
                                              "sentiment": sentiment.make}


def run(run: Run, data_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Train `run.config.task` in the claimed run directory; returns (and writes) its summary."""
    return loop.train(TASKS[run.config.task](run.config, run, data_dir, log), run.config, run, log)
