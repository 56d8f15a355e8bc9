"""Progress lines for long runs: step, epoch, loss, perplexity, tokens/s and ETA."""

from __future__ import annotations

import time
from typing import Callable

from rnnjax.records import ppl_text


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Tracks throughput from the second logged step on (the first includes compilation); time spent
    outside training (evaluation, sampling) is left out of tokens/s and the ETA (`exclude`)."""

    def __init__(self, total_steps: int, tokens_per_step: int, log: Callable[[str], None] = print):
        self.total = total_steps
        self.tokens_per_step = tokens_per_step
        self.log = log
        self.step = 0
        self._t0: float | None = None
        self._s0 = 0
        self._last_t: float | None = None
        self._last_s = 0

    def update(self, step: int) -> None:
        now = time.time()
        if self._t0 is None:
            self._t0, self._s0 = now, step
            self._last_t, self._last_s = now, step
        self.step = step

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` just spent on something other than training out of tokens/s and the ETA."""
        if self._t0 is not None:
            self._t0 += seconds
            self._last_t += seconds

    def tokens_per_s(self) -> float:
        """Throughput since the last report (or since the first step)."""
        now = time.time()
        steps = self.step - self._last_s
        return steps * self.tokens_per_step / (now - self._last_t) if steps and now > self._last_t else float("nan")

    def eta(self) -> float:
        now = time.time()
        done = self.step - self._s0
        return (self.total - self.step) * (now - self._t0) / done if done else float("nan")

    def report(self, record: dict) -> None:
        eta = self.eta()
        tokens = (f"batch ppl {ppl_text(record['perplexity'])} | {record['tokens_per_s']:,.0f} tok/s | "
                  if "tokens_per_s" in record else "")
        self.log(
            f"step {record['step']:>7,}/{self.total:,} | epoch {record['epoch']:.2f} | batch loss {record['loss']:.4f} | "
            f"{tokens}lr {record['lr']:.3g} | |g| {record['grad_norm']:.2f} | "
            f"ETA {format_seconds(eta) if eta == eta else '?'}"
        )
        self._last_t, self._last_s = time.time(), self.step
