"""PyTorch interop (`rnnjax.interop`): the same weights give PyTorch's outputs, final states and
gradients to float64 round-off; round trips; the word_language_model LM; one-line errors."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import cells, cli, interop, recurrent
from rnnjax.config import defaults
from rnnjax.errors import UserError
from rnnjax.model import make_lm

torch = pytest.importorskip("torch", reason="PyTorch interop tests need torch (pip install -e .[bench])")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELLS = list(interop.TORCH_CELLS)
KINDS = {"rnn_tanh": "RNN", "rnn_relu": "RNN", "gru": "GRU", "lstm": "LSTM"}
T, B, I, H = 5, 3, 4, 6
LENGTHS = [5, 2, 4]  # one full-length example, in no sorted order
EXACT = {"rtol": 1e-12, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _float64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny tensors: one thread beats PyTorch's pool, which spins for seconds on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torch_rnn(cell: str, num_layers: int = 2, bidirectional: bool = False, seed: int = 0, **kw):
    torch.manual_seed(seed)
    extra = {"nonlinearity": cell.removeprefix("rnn_")} if KINDS[cell] == "RNN" else {}
    return getattr(torch.nn, KINDS[cell])(I, H, num_layers, bidirectional=bidirectional, **extra, **kw).double()


def random_state(cell: str, num_layers: int, bidirectional: bool, seed: int) -> tuple:
    """PyTorch initial state tensors (h, or h and c), leaves of autograd."""
    g = torch.Generator().manual_seed(seed)
    n = num_layers * (2 if bidirectional else 1)
    return tuple(torch.randn(n, B, H, dtype=torch.float64, generator=g, requires_grad=True)
                 for _ in range(2 if cell == "lstm" else 1))


def as_tuple(state) -> tuple:
    return state if isinstance(state, tuple) else (state,)


def torch_grads(module, cell: str, prefix: str = "") -> dict:
    """The module's parameter gradients as a state_dict in rnnjax's gradient layout: for RNN and
    LSTM, where rnnjax's bias is bias_ih + bias_hh, d/d(bias) is PyTorch's d/d(bias_ih)."""
    grads = {prefix + k: p.grad for k, p in module.named_parameters()}
    if cell != "gru":
        for key in [k for k in grads if "bias_hh" in k]:
            np.testing.assert_allclose(grads[key], grads[key.replace("bias_hh", "bias_ih")], **EXACT)
            grads[key] = torch.zeros_like(grads[key])
    return grads


def assert_trees_close(got, want, **tol):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **(tol or EXACT))


def check_against_torch(cell: str, num_layers: int, bidirectional: bool, lengths: list[int] | None, fast: bool):
    """Outputs, final states and the gradients of a random linear function of both (w.r.t. the
    parameters, the inputs and the initial state) from PyTorch and from rnnjax's run_stack."""
    module = torch_rnn(cell, num_layers, bidirectional)
    g = torch.Generator().manual_seed(1)
    xs = torch.randn(T, B, I, dtype=torch.float64, generator=g, requires_grad=True)
    state0 = random_state(cell, num_layers, bidirectional, seed=2)
    width = H * (2 if bidirectional else 1)
    u = torch.randn(T, B, width, dtype=torch.float64, generator=g)
    v = [torch.randn(s.shape, dtype=torch.float64, generator=g) for s in state0]

    hidden = state0 if cell == "lstm" else state0[0]
    if lengths is None:
        ys, state = module(xs, hidden)
    else:
        packed, state = module(pack_padded_sequence(xs, torch.tensor(lengths), enforce_sorted=False), hidden)
        ys = pad_packed_sequence(packed, total_length=T)[0]
    loss = (ys * u).sum() + sum((s * w).sum() for s, w in zip(as_tuple(state), v))
    loss.backward()

    def rnnjax_loss(params, carries, xs):
        carries, ys = recurrent.run_stack(cells.get_cell(cell), params, carries, xs, bidirectional=bidirectional,
                                          lengths=None if lengths is None else jnp.asarray(lengths), fast=fast)
        state = as_tuple(interop.carries_to_torch(carries))
        value = (ys * u.numpy()).sum() + sum((s * w.numpy()).sum() for s, w in zip(state, v))
        return value, (ys, state)

    params = interop.rnn_params_from_torch(module, cell)
    carries = interop.carries_from_torch(tuple(s.detach() for s in state0), cell, bidirectional)
    value_and_grad = jax.jit(jax.value_and_grad(rnnjax_loss, argnums=(0, 1, 2), has_aux=True))
    (value, (got_ys, got_state)), grads = value_and_grad(params, carries, jnp.asarray(xs.detach().numpy()))

    np.testing.assert_allclose(got_ys, ys.detach().numpy(), **EXACT)
    assert_trees_close(got_state, tuple(s.detach().numpy() for s in as_tuple(state)))
    np.testing.assert_allclose(value, loss.item(), **EXACT)
    assert_trees_close(grads[0], interop.rnn_params_from_torch(torch_grads(module, cell), cell))
    assert_trees_close(as_tuple(interop.carries_to_torch(grads[1])), tuple(s.grad.numpy() for s in state0))
    np.testing.assert_allclose(grads[2], xs.grad.numpy(), **EXACT)


@pytest.mark.parametrize("cell,num_layers,bidirectional", list(itertools.product(CELLS, [1, 2], [False, True])))
def test_stack_matches_torch(cell, num_layers, bidirectional):
    """2-layer stacks run the custom-VJP scan (`fast=True`, what LM training runs), 1-layer ones the plain scan."""
    check_against_torch(cell, num_layers, bidirectional, lengths=None, fast=num_layers == 2)


@pytest.mark.parametrize("cell", CELLS)
def test_lengths_match_packed_sequences(cell):
    """Padded steps, both directions: outputs 0 (pad_packed_sequence's padding), final states at
    each example's last real step (the reverse direction's after reading back to step 0)."""
    check_against_torch(cell, 2, True, lengths=LENGTHS, fast=False)


@pytest.mark.parametrize("cell,bidirectional", list(itertools.product(CELLS, [False, True])))
def test_round_trips(cell, bidirectional):
    """rnnjax -> PyTorch -> rnnjax is exact; PyTorch -> rnnjax -> PyTorch gives the same function."""
    params = recurrent.init_stack(cells.get_cell(cell), jax.random.key(0), I, [H, H], bidirectional, jnp.float64)
    module = torch_rnn(cell, 2, bidirectional, seed=3)
    module.load_state_dict(interop.torch_state_dict(interop.rnn_params_to_torch(params, cell)))
    back = interop.rnn_params_from_torch(module, cell)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))

    original = torch_rnn(cell, 2, bidirectional, seed=4)
    again = torch_rnn(cell, 2, bidirectional, seed=5)
    again.load_state_dict(interop.torch_state_dict(interop.rnn_params_to_torch(
        interop.rnn_params_from_torch(original.state_dict(), cell), cell)))
    xs = torch.randn(T, B, I, dtype=torch.float64)
    assert_trees_close([t.detach().numpy() for t in jax.tree.leaves(again(xs))],
                       [t.detach().numpy() for t in jax.tree.leaves(original(xs))])


def test_a_module_without_biases_imports_with_zero_biases():
    module = torch_rnn("gru", 1, bias=False)
    params = interop.rnn_params_from_torch(module, "gru")
    assert not np.any(params[0]["bi"]) and not np.any(params[0]["bh"])
    carries = recurrent.stack_initial_carry(cells.get_cell("gru"), B, [H], dtype=jnp.float64)
    xs = torch.randn(T, B, I, dtype=torch.float64)
    _, ys = recurrent.run_stack(cells.get_cell("gru"), params, carries, jnp.asarray(xs.numpy()))
    np.testing.assert_allclose(ys, module(xs)[0].detach().numpy(), **EXACT)


class WordLM(torch.nn.Module):
    """PyTorch's word_language_model RNNModel layout: encoder -> rnn -> decoder (tied or not)."""

    def __init__(self, cell: str, vocab: int, embed: int, hidden: int, num_layers: int, tied: bool):
        super().__init__()
        self.encoder = torch.nn.Embedding(vocab, embed)
        extra = {"nonlinearity": cell.removeprefix("rnn_")} if KINDS[cell] == "RNN" else {}
        self.rnn = getattr(torch.nn, KINDS[cell])(embed, hidden, num_layers, **extra)
        self.decoder = torch.nn.Linear(hidden, vocab)
        if tied:
            self.decoder.weight = self.encoder.weight

    def forward(self, tokens, hidden=None):
        out, hidden = self.rnn(self.encoder(tokens), hidden)
        return self.decoder(out), hidden


def lm_grads(model: WordLM, cell: str) -> dict:
    """The LM's gradients in rnnjax's layout (tied: one matrix, so the same gradient under both names)."""
    return interop.lm_params_from_torch({
        "encoder.weight": model.encoder.weight.grad, "decoder.weight": model.decoder.weight.grad,
        "decoder.bias": model.decoder.bias.grad, **torch_grads(model.rnn, cell, prefix="rnn.")}, cell)


# Every cell; tied and untied decoders; both `model.impl`s (the fused decoder NLL and plain autodiff)
LM_CASES = [("rnn_tanh", False, "fast"), ("rnn_relu", True, "fast"), ("gru", False, "fast"), ("gru", True, "reference"),
            ("lstm", True, "fast"), ("lstm", False, "reference")]


@pytest.mark.parametrize("cell,tied,impl", LM_CASES)
def test_lm_loss_and_gradients_match_torch(cell, tied, impl):
    """rnnjax's LM loss (`lm.nll`, mean and sum over tokens) equals PyTorch's cross entropy of the
    word_language_model layout, and so do the final states and every gradient."""
    vocab, hidden = 11, 6
    torch.manual_seed(0)
    model = WordLM(cell, vocab, hidden if tied else 5, hidden, 2, tied).double()
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(vocab, (T, B), generator=g)
    targets = torch.randint(vocab, (T, B), generator=g)
    logits, state = model(tokens)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    total = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    loss.backward()

    params = interop.lm_params_from_torch(model, cell)
    assert ("w" not in params["decoder"]) == tied
    config = interop.lm_config(defaults(), params, cell)
    config.model.impl = impl
    lm = make_lm(config, vocab)

    def mean_nll(params):
        carries, nll = lm.nll(params, lm.initial_carry(B, jnp.float64), jnp.asarray(tokens.numpy().T),
                              jnp.asarray(targets.numpy().T))
        return nll.mean(), (nll, carries)

    (value, (nll, carries)), grads = jax.jit(jax.value_and_grad(mean_nll, has_aux=True))(params)
    assert value.dtype == jnp.float64
    np.testing.assert_allclose(value, loss.item(), **EXACT)
    np.testing.assert_allclose(nll.sum(), total.item(), **EXACT)
    assert_trees_close(as_tuple(interop.carries_to_torch(carries)), tuple(s.detach().numpy() for s in as_tuple(state)))
    assert_trees_close(grads, lm_grads(model, cell))


@pytest.mark.parametrize("cell", CELLS)
def test_lm_round_trip_is_exact(cell):
    config = defaults()
    config.model.cell, config.model.hidden_size, config.model.embed_size = cell, 6, 5
    params = make_lm(config, 11).init(jax.random.key(0), jnp.float64)
    model = WordLM(cell, 11, 5, 6, 2, tied=False).double()
    model.load_state_dict(interop.torch_state_dict(interop.lm_params_to_torch(params, cell)))
    back = interop.lm_params_from_torch(model, cell)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)))


def test_reorder_vocab_renumbers_tokens():
    """Token t scores the same under the renumbered parameters at its new id."""
    model = WordLM("gru", 4, 3, 3, 1, tied=False).double()
    params = interop.lm_params_from_torch(model, "gru")
    vocab, new_vocab = ["a", "b", "c", "d"], ["c", "a", "d", "b"]
    moved = interop.reorder_vocab(params, vocab, new_vocab)
    config = interop.lm_config(defaults(), params, "gru")
    lm = make_lm(config, 4)
    tokens = np.array([[0, 1, 2, 3, 1]])
    renumbered = np.array([[new_vocab.index(vocab[i]) for i in tokens[0]]])
    _, logits = lm.apply(params, lm.initial_carry(1, jnp.float64), tokens)
    _, moved_logits = lm.apply(moved, lm.initial_carry(1, jnp.float64), renumbered)
    np.testing.assert_allclose(moved_logits, logits[..., [vocab.index(t) for t in new_vocab]], **EXACT)
    with pytest.raises(UserError, match="'e'"):
        interop.reorder_vocab(params, vocab, ["a", "b", "c", "e"])


def without(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


ERRORS = {
    "wrong cell for the module": (lambda: interop.rnn_params_from_torch(torch_rnn("gru"), "lstm"),
                                  r"the module is a 'gru' \(GRU\), not a 'lstm'"),
    "tanh module as relu": (lambda: interop.rnn_params_from_torch(torch_rnn("rnn_tanh"), "rnn_relu"),
                            "the module is a 'rnn_tanh'"),
    "wrong gate count": (lambda: interop.rnn_params_from_torch(torch_rnn("gru").state_dict(), "lstm"),
                         r"weight_hh_l0 has shape \(18, 6\): cell 'lstm' expects \(4 gates x hidden, hidden\)"),
    "missing key": (lambda: interop.rnn_params_from_torch(without(torch_rnn("lstm").state_dict(), "weight_ih_l1"),
                                                          "lstm"), "state_dict has no 'weight_ih_l1'"),
    "missing layer": (lambda: interop.rnn_params_from_torch(
        {k: v for k, v in torch_rnn("lstm", 3).state_dict().items() if "_l1" not in k}, "lstm"),
        r"found layers \[0, 2\]"),
    "proj_size module": (lambda: interop.rnn_params_from_torch(torch_rnn("lstm", proj_size=2), "lstm"),
                         "proj_size=2 has no rnnjax cell"),
    "proj_size state_dict": (lambda: interop.rnn_params_from_torch(torch_rnn("lstm", proj_size=2).state_dict(),
                                                                   "lstm"), "unexpected state_dict key 'weight_hr_l0'"),
    "cell without a PyTorch module": (lambda: interop.rnn_params_from_torch(torch_rnn("gru"), "min_gru"),
                                      "cell 'min_gru' has no PyTorch counterpart"),
    "LM without decoder": (lambda: interop.lm_params_from_torch(
        without(WordLM("lstm", 7, 4, 4, 1, tied=False).state_dict(), "decoder.bias"), "lstm"),
        "state_dict has no 'decoder.bias'"),
    "LM of the wrong cell": (lambda: interop.lm_params_from_torch(WordLM("gru", 7, 4, 4, 1, tied=True), "lstm"),
                             "the module is a 'gru'"),
    "bidirectional LM": (lambda: interop.lm_params_from_torch(
        {"encoder.weight": torch.zeros(7, I), "decoder.weight": torch.zeros(7, 2 * H), "decoder.bias": torch.zeros(7),
         **{f"rnn.{k}": v for k, v in torch_rnn("gru", 1, True).state_dict().items()}}, "gru"),
        "a language model's RNN runs forward only"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_a_one_line_user_error(case):
    make, message = ERRORS[case]
    with pytest.raises(UserError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_write_lm_run_refuses_parameters_of_another_model(tmp_path):
    params = interop.lm_params_from_torch(WordLM("gru", 7, 4, 4, 1, tied=True), "gru")
    config = interop.lm_config(defaults(), params, "lstm")
    with pytest.raises(UserError, match="do not fit the model the config describes .model.cell 'lstm'"):
        interop.write_lm_run(tmp_path / "run", config, list("abcdefg"), params)
    assert not (tmp_path / "run").exists()


def test_training_an_imported_run_is_one_line_saying_why(tmp_path, capsys):
    params = interop.lm_params_from_torch(WordLM("lstm", 7, 4, 4, 1, tied=True), "lstm")
    config = interop.lm_config(defaults(), params, "lstm")
    run = interop.write_lm_run(tmp_path / "run", config, list("abcdefg"), params)
    assert cli.main(["train", "--workdir", str(run)]) == 2
    assert "holds imported weights without optimizer state" in capsys.readouterr().err


def load_example():
    path = ROOT / "experiments" / "torch_import" / "import_word_lm.py"
    spec = importlib.util.spec_from_file_location("import_word_lm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_rnnjax_eval_equals_torch_perplexity(tmp_path, shared_data, capsys):
    """The example's path on a tiny model: a few PyTorch steps on PTB, its own evaluation, the
    import into a run directory and `rnnjax eval` of it give the same perplexity (float32)."""
    with jax.enable_x64(False):
        example = load_example()
        torch.manual_seed(0)
        words, splits = example.read_ptb(shared_data / "ptb")
        model = example.RNNModel("lstm", len(words), 8, 2)
        example.train(model, splits["train"], steps=3)
        torch_nll = example.evaluate(model, splits["valid"])
        workdir = example.import_run(model, "lstm", words, tmp_path / "imported", shared_data)
        capsys.readouterr()
        assert cli.main(["eval", "--workdir", str(workdir), "--split", "valid", "--data-dir", str(shared_data)]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["checkpoint_step"] == 0
    assert result["loss"] == pytest.approx(torch_nll, rel=1e-5)
    assert result["perplexity"] == pytest.approx(np.exp(torch_nll), rel=1e-5)
    with pytest.raises(UserError, match="not empty"):
        example.import_run(model, "lstm", words, workdir, shared_data)
