"""Text generation from a trained language model: warm up on a prime, then one jitted scan.

    rnnjax sample --workdir DIR --prime "Far" --length 500 [--temperature 0.8] [--top-k 5]
                  [--top-p 0.9] [--greedy] [--seed 0] [--num-samples 3] [--checkpoint latest]

The prime is read by one `unroll` (the carry after its last token and that token's
logits start the generation); then `length` tokens come out of a single `lax.scan`
that picks a token, feeds it back and carries the state, all inside one jitted
function. The same seed gives the same text. Char models print characters (any
script, e.g. the Chinese `jaychou` corpus); word models print words, `<eos>` as a line end.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.errors import ConfigError
from rnnjax.model import LanguageModel

Array = jax.Array
UNK = "<unk>"
EOS = "<eos>"


class Sampler(NamedTuple):
    """How the next token is picked from the logits; the defaults draw from the model's distribution."""

    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    top_p: float = 1.0  # 1: no nucleus cut
    greedy: bool = False


def check_sampler(s: Sampler) -> None:
    if not s.temperature > 0:
        raise ConfigError(f"--temperature {s.temperature}: expected a positive number (use --greedy for argmax)")
    if s.top_k < 0:
        raise ConfigError(f"--top-k {s.top_k}: expected 0 (off) or a positive count")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"--top-p {s.top_p}: expected a probability mass in (0, 1]")


def pick(key: Array, logits: Array, s: Sampler) -> Array:
    """Next token ids [B] from logits [B, V].

    Temperature divides the logits; top-k keeps the k largest; top-p (nucleus) then keeps
    the smallest set of most likely tokens whose renormalised mass reaches p (the most
    likely token always stays); a token is drawn from what is left.
    """
    logits = logits.astype(jnp.float32)
    if s.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / s.temperature
    if s.top_k == 0 and s.top_p >= 1.0:
        return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
    vocab_size = logits.shape[-1]
    k = min(s.top_k, vocab_size) if s.top_k > 0 else vocab_size
    vals, idx = jax.lax.top_k(logits, k)  # sorted, most likely first
    if s.top_p < 1.0:
        probs = jax.nn.softmax(vals, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs
        vals = jnp.where(mass_before < s.top_p, vals, -jnp.inf)
    choice = jax.random.categorical(key, vals, axis=-1)
    return jnp.take_along_axis(idx, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("lm", "length", "s", "num_samples"))
def _generate(lm: LanguageModel, params: Any, prime: Array, length: int, key: Array, s: Sampler,
              num_samples: int) -> Array:
    carry = lm.initial_carry(num_samples)
    carry, logits = lm.apply(params, carry, jnp.broadcast_to(prime, (num_samples, prime.shape[0])))

    def body(state, k):
        carry, last_logits = state
        token = pick(k, last_logits, s)
        carry, logits = lm.apply(params, carry, token[:, None])
        return (carry, logits[0]), token

    _, tokens = jax.lax.scan(body, (carry, logits[-1]), jax.random.split(key, length))
    return tokens.T


def generate(lm: LanguageModel, params: Any, prime: Array, length: int, key: Array, s: Sampler,
             num_samples: int = 1) -> Array:
    """`num_samples` continuations [M, length] of the prime token ids [P] (P >= 1), in one jitted call.

    Compiled once per (model, length, sampler, M, prime length): samples printed at every
    evaluation of a training run reuse the same program.
    """
    return _generate(lm, params, jnp.asarray(prime, jnp.int32), length, key, s, num_samples)


def token_level(vocab: list[str]) -> str:
    """"char" when every token but `<unk>` is one character (char and symbol corpora), else "word"."""
    return "char" if all(len(t) == 1 for t in vocab if t != UNK) else "word"


def encode_prime(prime: str, vocab: list[str], level: str, oov: str = "error") -> np.ndarray:
    """Token ids of the prime: characters or whitespace-separated words.

    Tokens outside the vocabulary are an error listing them (`oov="error"`), or become
    `<unk>` (`oov="unk"`) when the vocabulary has it.
    """
    tokens = list(prime) if level == "char" else prime.split()
    if not tokens:
        raise ConfigError("--prime is empty; give at least one token to start from")
    index = {t: i for i, t in enumerate(vocab)}
    missing = list(dict.fromkeys(t for t in tokens if t not in index))
    if missing:
        shown = ", ".join(repr(t) for t in missing)
        if oov == "unk" and UNK in index:
            return np.array([index.get(t, index[UNK]) for t in tokens], np.int32)
        hint = "" if UNK not in index else " (use --oov unk to map them to <unk>)"
        no_unk = " and it has no <unk>" if oov == "unk" else ""
        raise ConfigError(f"--prime has {len(missing)} {level}(s) not in the vocabulary{no_unk}: {shown}{hint}")
    return np.array([index[t] for t in tokens], np.int32)


def render(ids, vocab: list[str], level: str) -> str:
    """Token ids as text: characters joined as they are, words by spaces, `<eos>` as a line end."""
    tokens = [vocab[int(i)] for i in ids]
    if level == "char":
        return "".join(tokens)
    return " ".join(tokens).replace(f" {EOS} ", "\n").replace(EOS, "\n")


def sample_text(lm: LanguageModel, params: Any, vocab: list[str], level: str, prime: str, length: int,
                key: Array, s: Sampler = Sampler(), num_samples: int = 1, oov: str = "error") -> list[str]:
    """Prime + generated continuation, as text, for each of `num_samples` samples."""
    check_sampler(s)
    ids = encode_prime(prime, vocab, level, oov)
    out = np.asarray(generate(lm, params, ids, length, key, s, num_samples))
    joint = " " if level == "word" and not prime.endswith((" ", "\n")) else ""
    return [prime + joint + render(row, vocab, level) for row in out]


def progress_sample(lm: LanguageModel, params: Any, corpus, config, step: int) -> str:
    """The "sample: ..." line `rnnjax train` prints at an evaluation when `eval.sample_length` > 0.

    Drawn at temperature 1 from `eval.sample_prime` (default: the first training token),
    with a key fixed by the seed and step, so reruns print the same lines.
    """
    level = "word" if corpus.level == "word" else "char"
    prime = config.eval.sample_prime or corpus.vocab[int(corpus.splits["train"][0])]
    key = jax.random.fold_in(jax.random.key(config.seed), step)
    text = sample_text(lm, params, corpus.vocab, level, prime, config.eval.sample_length, key, oov="unk")[0]
    return f"sample at step {step}: {text!r}"
