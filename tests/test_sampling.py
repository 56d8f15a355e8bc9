"""Sampling: token pickers, generation by prime warm-up + scan, prime handling, the CLI."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import cli, sampling
from rnnjax.config import defaults
from rnnjax.errors import ConfigError
from rnnjax.model import make_lm
from rnnjax.sampling import Sampler


def tiny_lm(vocab_size: int, seed: int = 0):
    c = defaults()
    c.model.num_layers = 2
    c.model.hidden_size = 16
    c.model.embed_size = 8
    lm = make_lm(c, vocab_size)
    params = jax.jit(lm.init)(jax.random.key(seed))
    # larger decoder weights give a peaked, seed-dependent distribution worth sampling from
    params["decoder"]["w"] = params["decoder"]["w"] * 30
    return lm, params


def draws(logits: np.ndarray, s: Sampler, n: int = 2000) -> np.ndarray:
    """n independent picks from each row of `logits` [B, V] -> [n, B]."""
    keys = jax.random.split(jax.random.key(1), n)
    return np.asarray(jax.jit(jax.vmap(lambda k, x: sampling.pick(k, x, s), (0, None)))(keys, jnp.asarray(logits)))


def test_greedy_is_argmax_and_low_temperature_equals_greedy():
    logits = np.asarray(jax.random.normal(jax.random.key(0), (64, 50))) * 3
    greedy = draws(logits, Sampler(greedy=True), n=3)
    assert (greedy == logits.argmax(-1)).all()
    cold = draws(logits, Sampler(temperature=1e-4), n=50)
    assert (cold == logits.argmax(-1)).all()
    warm = draws(logits, Sampler(temperature=1.0), n=50)
    assert (warm != logits.argmax(-1)).any()


def test_top_k_never_leaves_the_k_most_likely():
    logits = np.asarray(jax.random.normal(jax.random.key(2), (16, 40))) * 0.5  # flat: many tokens compete
    for k in (1, 3, 7):
        out = draws(logits, Sampler(top_k=k), n=500)
        top = np.argsort(-logits, axis=-1)[:, :k]
        for row in range(logits.shape[0]):
            assert set(out[:, row]) <= set(top[row])
        if k > 1:
            assert all(len(set(out[:, row])) == k for row in range(logits.shape[0]))  # and uses all of them


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    probs = np.array([0.05, 0.5, 0.15, 0.3])  # sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    logits = np.log(probs)[None]
    for p, kept in ((0.4, {1}), (0.7, {1, 3}), (0.8, {1, 3}), (0.81, {1, 3, 2}), (0.96, {1, 3, 2, 0})):
        out = draws(logits, Sampler(top_p=p), n=4000)[:, 0]
        assert set(out) == kept, p
    # renormalised over what is kept: token 1 has 0.5 / 0.8 of the mass at p = 0.7
    out = draws(logits, Sampler(top_p=0.7), n=4000)[:, 0]
    assert abs((out == 1).mean() - 0.625) < 0.03


def test_top_k_and_top_p_compose():
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    out = draws(np.log(probs)[None], Sampler(top_k=3, top_p=0.95), n=3000)[:, 0]
    assert set(out) == {0, 1, 2}  # top-p over the top-3 renormalised mass (0.44, 0.33, 0.22) keeps all three


def test_generation_equals_rerunning_the_prefix():
    """Warm-up + scan gives what feeding the whole growing sequence from scratch gives."""
    lm, params = tiny_lm(12, seed=2)  # greedy continuations of most tiny random models settle on one token
    # at once; this one's changes token mid-way, so the carried state is exercised
    prime = np.array([3, 1, 4, 1, 5], np.int32)
    out = np.asarray(sampling.generate(lm, params, prime, 15, jax.random.key(0), Sampler(greedy=True)))[0]
    # the model is causal, so the logits at position t of a zero-padded buffer see tokens <= t only
    full = jax.jit(lambda p, x: lm.apply(p, lm.initial_carry(1), x)[1][:, 0])
    buf = np.zeros((1, len(prime) + 15), np.int32)
    buf[0, : len(prime)] = prime
    for t in range(len(prime), buf.shape[1]):
        buf[0, t] = int(jnp.argmax(full(params, jnp.asarray(buf))[t - 1]))
    assert out.tolist() == buf[0, len(prime):].tolist()
    assert len(set(out.tolist())) > 1


def test_same_seed_same_text_and_samples_differ():
    lm, params = tiny_lm(12)
    prime = np.array([2, 7], np.int32)
    a = np.asarray(sampling.generate(lm, params, prime, 40, jax.random.key(5), Sampler(), num_samples=3))
    b = np.asarray(sampling.generate(lm, params, prime, 40, jax.random.key(5), Sampler(), num_samples=3))
    c = np.asarray(sampling.generate(lm, params, prime, 40, jax.random.key(6), Sampler(), num_samples=3))
    assert a.shape == (3, 40) and (a == b).all()
    assert (a != c).any()
    assert len({tuple(r) for r in a}) == 3  # each sample draws its own tokens


def test_prime_errors_and_unk():
    vocab = ["a", "b", "c", "<unk>"]
    assert sampling.encode_prime("cab", vocab, "char").tolist() == [2, 0, 1]
    with pytest.raises(ConfigError, match=r"2 char\(s\) not in the vocabulary: 'x', 'y' \(use --oov unk"):
        sampling.encode_prime("axyx", vocab, "char")
    assert sampling.encode_prime("axb", vocab, "char", oov="unk").tolist() == [0, 3, 1]
    with pytest.raises(ConfigError, match="no <unk>"):
        sampling.encode_prime("ax", ["a", "b"], "char", oov="unk")
    with pytest.raises(ConfigError, match="empty"):
        sampling.encode_prime("   ", ["the", "cat"], "word")
    words = ["the", "cat", "<eos>", "<unk>"]
    assert sampling.token_level(words) == "word" and sampling.token_level(vocab) == "char"
    assert sampling.encode_prime("the  cat\n", words, "word").tolist() == [0, 1]
    with pytest.raises(ConfigError, match="'dog'"):
        sampling.encode_prime("the dog", words, "word")
    assert sampling.render([0, 1, 2, 1], words, "word") == "the cat\ncat"
    for bad in (Sampler(temperature=0.0), Sampler(top_k=-1), Sampler(top_p=0.0), Sampler(top_p=1.5)):
        with pytest.raises(ConfigError):
            sampling.check_sampler(bad)


def test_chinese_round_trip(shared_data):
    text = (shared_data / "jaychou" / "jaychou_lyrics.txt").read_text(encoding="utf-8")[:3000]
    vocab = sorted(set(text))
    prime = "分开"
    ids = sampling.encode_prime(prime, vocab, sampling.token_level(vocab))
    assert len(ids) == 2 and sampling.render(ids, vocab, "char") == prime
    lm, params = tiny_lm(len(vocab))
    (out,) = sampling.sample_text(lm, params, vocab, "char", prime, 20, jax.random.key(0))
    assert out.startswith(prime) and len(out) == 22 and set(out) <= set(vocab)


def test_cli_sample_end_to_end(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["train", "--config", "quickstart", "--workdir", str(workdir), "--config.train.max_steps=3",
                     "--config.model.hidden_size=16", "--config.data.synthetic_train_tokens=20000",
                     "--config.data.synthetic_eval_tokens=4000", "--config.eval.sample_length=10"]) == 0
    assert "sample at step 3: '" in capsys.readouterr().out
    args = ["sample", "--workdir", str(workdir), "--prime", "abc", "--length", "25", "--num-samples", "2",
            "--top-k", "5", "--seed", "3"]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    assert cli.main(args) == 0
    assert capsys.readouterr().out == first
    samples = first.strip().split("\n\n")
    vocab = json.loads((workdir / "vocab.json").read_text())
    assert len(samples) == 2 and all(s.startswith("abc") and len(s) == 28 and set(s) <= set(vocab) for s in samples)
    assert cli.main(["sample", "--workdir", str(workdir), "--prime", "aZ!"]) == 2
    assert "rnnjax: error: --prime has 2 char(s) not in the vocabulary: 'Z', '!'" in capsys.readouterr().err
