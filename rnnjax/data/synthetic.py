"""A seeded second-order Markov source whose entropy rate is known exactly.

Each context (a, b) of the two previous symbols has `branching` possible next symbols
with Dirichlet(1) probabilities. The support always contains (b + 1) mod V, and the
context (V-1, 0) also contains 0, so the chain on pairs has a single closed class
containing cycles of lengths V and V + 1: a unique stationary distribution, reached
from any start. The entropy rate

    H = sum_{a,b} pi(a, b) * H(P(. | a, b))   nats/token

is computed from that stationary distribution, and exp(H) is the perplexity floor no
model can beat on average (`floor_ppl` in a run's summary). The corpus needs no
download: the same seed gives the same tokens on every machine.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class MarkovSource(NamedTuple):
    probs: np.ndarray  # [V, V, V]: probs[a, b, c] = P(next = c | prev2 = a, prev1 = b)

    @property
    def vocab_size(self) -> int:
        return self.probs.shape[0]


def make_source(seed: int, vocab_size: int, branching: int) -> MarkovSource:
    if not 2 <= branching <= vocab_size:
        raise ValueError(f"synthetic branching must be in [2, vocab_size={vocab_size}], got {branching}")
    rng = np.random.default_rng([seed, 1])
    v = vocab_size
    probs = np.zeros((v, v, v))
    for a in range(v):
        for b in range(v):
            forced = {(b + 1) % v} | ({0} if (a, b) == (v - 1, 0) else set())
            others = [c for c in range(v) if c not in forced]
            extra = rng.choice(others, size=branching - len(forced), replace=False)
            support = sorted(forced | set(extra.tolist()))
            probs[a, b, support] = rng.dirichlet(np.ones(len(support)))
    return MarkovSource(probs)


def stationary(source: MarkovSource, tol: float = 1e-13, max_iter: int = 100_000) -> np.ndarray:
    """Stationary distribution pi[a, b] of the chain on symbol pairs, by power iteration."""
    v = source.vocab_size
    pi = np.full((v, v), 1.0 / v**2)
    for _ in range(max_iter):
        new = np.einsum("ab,abc->bc", pi, source.probs)
        if np.abs(new - pi).sum() < tol:
            return new
        pi = new
    raise RuntimeError("stationary distribution did not converge")


def entropy_rate(source: MarkovSource) -> float:
    """Exact entropy rate in nats/token."""
    p = source.probs
    with np.errstate(divide="ignore", invalid="ignore"):
        h_ctx = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
    return float((stationary(source) * h_ctx).sum())


def sample(source: MarkovSource, num_tokens: int, seed: int) -> np.ndarray:
    """`num_tokens` symbols from the chain after a burn-in of 1,000 steps."""
    rng = np.random.default_rng(seed)
    v = source.vocab_size
    cdf = np.cumsum(source.probs.reshape(v * v, v), axis=-1)
    cdf[:, -1] = 1.0
    burn = 1000
    u = rng.random(num_tokens + burn)
    out = np.empty(num_tokens + burn, np.int32)
    a, b = 0, 1
    rows = cdf.tolist()
    for t in range(num_tokens + burn):
        row = rows[a * v + b]
        c = 0
        while row[c] < u[t]:
            c += 1
        out[t] = c
        a, b = b, c
    return out[burn:]


def symbols(vocab_size: int) -> list[str]:
    """Printable names of the source's symbols: letters when they suffice."""
    if vocab_size <= 26:
        return [chr(ord("a") + i) for i in range(vocab_size)]
    return [f"s{i}" for i in range(vocab_size)]


def splits(seed: int, vocab_size: int, branching: int, train_tokens: int, eval_tokens: int) -> dict:
    """{'train', 'valid', 'test'} token arrays, plus the source's exact perplexity floor."""
    source = make_source(seed, vocab_size, branching)
    data = {
        "train": sample(source, train_tokens, seed * 3 + 11),
        "valid": sample(source, eval_tokens, seed * 3 + 12),
        "test": sample(source, eval_tokens, seed * 3 + 13),
    }
    return {"splits": data, "floor_ppl": math.exp(entropy_rate(source))}
