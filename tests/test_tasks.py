"""The small tasks (sine, echo, sentiment) learn, write their files, and masking is exact."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnjax import cli, config as config_lib, optim, rundir, steps, tasks
from rnnjax import progress as progress_lib
from rnnjax.tasks import echo, sentiment, sine
from rnnjax.config import defaults
from rnnjax.errors import ConfigError
from rnnjax.records import read_metrics

import tiny

ROOT = Path(__file__).resolve().parents[1]


def _summary(workdir: Path) -> dict:
    return json.loads((workdir / "summary.json").read_text())


def test_sine_learns_far_below_the_mean_baseline(tmp_path):
    workdir = tmp_path / "sine"
    assert cli.main(["train", "--config", str(ROOT / "configs" / "sine.py"), "--workdir", str(workdir),
                     "--config.sine.train_points=1000", "--config.sine.test_points=200",
                     "--config.sine.spacing=0.05", "--config.model.hidden_size=16", "--config.train.num_epochs=8",
                     "--config.train.learning_rate=0.01", "--config.train.log_every=20"]) == 0
    s = _summary(workdir)
    assert s["test_mse"] < 0.02 * s["baseline_mean_mse"]
    assert (workdir / "sine_test.png").stat().st_size > 10_000
    assert json.loads((workdir / "config.json").read_text())["task"] == "sine"
    evals = [r for r in read_metrics(workdir / "metrics.jsonl") if r["split"] == "test"]  # one schema: per split
    assert len(evals) == 8 and evals[-1]["mse"] == s["test_mse"] and evals[-1]["epoch"] == 8.0


def test_sine_data_layout():
    c = defaults()
    c.sine.train_points, c.sine.test_points, c.sine.window = 100, 30, 10
    d = sine.sine_data(c)
    assert d["x_train"].shape == (90, 10) and d["x_test"].shape == (30, 10)
    np.testing.assert_allclose(d["y_test"], np.sin(np.arange(100, 130) * c.sine.spacing), rtol=1e-6)
    np.testing.assert_allclose(d["x_test"][0], np.sin(np.arange(90, 100) * c.sine.spacing), rtol=1e-6)


def test_echo_stream_is_the_delayed_input():
    x, y = echo.echo_stream(0, 1000, 3, 5)
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    assert x.shape == (5, 200) and (flat_y[3:] == flat_x[:-3]).all() and (flat_y[:3] == 0).all()


def test_echo_learns_across_window_boundaries(tmp_path):
    c = defaults()
    c.task = "echo"
    c.echo.train_length, c.echo.test_length = 10_000, 2_000
    c.model.num_layers, c.model.hidden_size, c.model.embed_size = 3, 8, 4
    c.train.batch_size, c.train.seq_len, c.train.num_epochs = 5, 15, 3
    c.train.optimizer, c.train.learning_rate, c.train.log_every = "adam", 0.02, 50
    with rundir.open_run(tmp_path, c) as run:
        s = tasks.run(run, tmp_path, log=lambda _: None)
    assert s["test_accuracy"] > 0.97 and s["metric"] == "test_accuracy" and s["goal"] == "max"
    train_losses = [r["loss"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["split"] == "train"]
    assert train_losses[-1] < 0.25 * math.log(2)  # trivial baseline: a coin flip
    assert (tmp_path / "echo.png").is_file()


def _sentence_config(bidirectional: bool = False, pooling: str = "last"):
    c = defaults()
    c.task = "sentiment"
    c.model.cell = "gru"
    c.model.num_layers = 2
    c.model.layer_sizes = (6, 4)
    c.model.embed_size = 5
    c.sentiment.bidirectional = bidirectional
    c.sentiment.pooling = pooling
    return c


@pytest.mark.parametrize("bidirectional,pooling", [(False, "last"), (False, "mean"), (True, "last"), (True, "mean")])
def test_padded_batch_equals_unpadded_examples(bidirectional, pooling):
    clf = sentiment.make_classifier(_sentence_config(bidirectional, pooling), 30)
    params = jax.jit(clf.init)(jax.random.key(0))
    apply = jax.jit(clf.apply)
    rng = np.random.default_rng(0)
    lengths = np.array([7, 1, 4, 12], np.int32)
    ids = np.zeros((4, 12), np.int32)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(2, 30, n)
    ids_noisy = ids.copy()
    ids_noisy[ids == 0] = 7  # what sits in the padding must not matter
    batched = np.asarray(apply(params, jnp.asarray(ids_noisy), jnp.asarray(lengths)))
    single = [float(apply(params, jnp.asarray(ids[r:r + 1, :n]), jnp.asarray([n]))[0])
              for r, n in enumerate(lengths)]
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)


def test_sentence_classifier_learns_a_keyword_rule(tmp_path):
    """Label = whether token 3 occurs: far below the coin-flip loss within a few epochs."""
    c = _sentence_config(pooling="last")
    c.model.layer_sizes = (16, 8)
    c.model.embed_size = 8
    c.train.batch_size, c.train.num_epochs, c.train.optimizer, c.train.learning_rate = 32, 6, "adam", 0.02
    rng = np.random.default_rng(1)
    lengths = rng.integers(3, 15, 800).astype(np.int32)
    ids = np.zeros((800, 15), np.int32)
    for r, n in enumerate(lengths):
        ids[r, :n] = rng.integers(4, 20, n)
    labels = (rng.random(800) < 0.5).astype(np.float32)
    where = (rng.random(800) * lengths).astype(int)
    ids[labels > 0, where[labels > 0]] = 3
    clf = sentiment.make_classifier(c, 20)

    def objective(params, carry, batch, key):
        x, n, y = batch
        loss = optax.sigmoid_binary_cross_entropy(clf.apply(params, x, n, key), y).mean()
        return loss, (carry, loss)

    lr = optim.schedule(c, 25, 150)
    opt = optim.optimizer(c, lr)
    state = steps.init_state(steps.Model(clf.init, lambda batch_size: ()), opt, jax.random.key(0), 32)
    step = steps.make_step(objective, opt, lr)
    for epoch in range(6):
        order = np.random.default_rng(epoch).permutation(800)
        for i in range(25):
            idx = order[32 * i:32 * (i + 1)]
            state, _ = step(state, (ids[idx], lengths[idx], labels[idx]), jax.random.key(1))
    loss, _ = objective(state.params, (), (ids, lengths, labels), None)
    assert float(loss) < 0.15 * math.log(2)


@pytest.mark.parametrize("task", ["sine", "echo", "sentiment"])
def test_small_tasks_resume_bit_identically_after_sigterm(tmp_path, monkeypatch, shared_data, task):
    """The one loop gives every task checkpoints and resume: stopped by SIGTERM at step 7 and run
    again, the run logs the same losses and ends with the same summary as an uninterrupted one."""
    overrides = {"sine": ["--config.sine.train_points=400", "--config.sine.test_points=50",
                          "--config.model.hidden_size=8"],
                 "echo": ["--config.echo.train_length=2000", "--config.echo.test_length=500",
                          "--config.model.hidden_size=8", "--config.train.batch_size=5"],
                 "sentiment": ["--config.model.embed_size=8", "--config.train.batch_size=64",
                               "--config.model.dropout=0.3"]}[task]
    args = ["--config", str(ROOT / "configs" / f"{task}.py"), "--config.train.max_steps=12",
            "--config.train.log_every=1", "--config.eval.every_steps=4", *overrides]
    assert cli.main(["train", "--workdir", str(tmp_path / "ref"), *args]) == 0
    update = progress_lib.Progress.update

    def stop_at_7(self, step):
        update(self, step)
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(progress_lib.Progress, "update", stop_at_7)
    assert cli.main(["train", "--workdir", str(tmp_path / "work"), *args]) == 0
    assert not (tmp_path / "work" / "summary.json").exists()
    monkeypatch.setattr(progress_lib.Progress, "update", update)
    assert cli.main(["train", "--workdir", str(tmp_path / "work"), *args]) == 0

    def outcome(d):
        records = [{k: v for k, v in r.items() if k not in ("wall_s", "tokens_per_s")}
                   for r in read_metrics(d / "metrics.jsonl")]
        summary = {k: v for k, v in _summary(d).items() if k not in ("wall_s", "tokens_per_s")}
        return records, summary

    assert outcome(tmp_path / "work") == outcome(tmp_path / "ref")


def test_sentiment_end_to_end_on_rt_polarity(tmp_path, shared_data):
    workdir = tmp_path / "sent"
    assert cli.main(["train", "--config", str(ROOT / "configs" / "sentiment.py"), "--workdir", str(workdir),
                     "--config.model.embed_size=16", "--config.train.num_epochs=1", "--config.train.max_steps=20",
                     "--config.train.batch_size=128", "--config.train.learning_rate=0.01"]) == 0
    s = _summary(workdir)
    assert s["sentences"] == {"train": 8636, "valid": 960, "test": 1066}
    assert 0.0 <= s["test_accuracy"] <= 1.0 and s["epoch_kept"] == 20 / 67  # epochs done at the kept checkpoint
    vocab = json.loads((workdir / "vocab.json").read_text())
    assert vocab[:2] == ["<pad>", "<unk>"] and len(vocab) == s["vocab_size"]


def test_sentiment_split_is_seeded_and_disjoint():
    c = _sentence_config()
    a, b = sentiment.split_indices(1000, c), sentiment.split_indices(1000, c)
    assert all((a[k] == b[k]).all() for k in a)
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(1000))
    assert (len(a["test"]), len(a["valid"])) == (100, 90)
    c.seed = 1
    assert not (sentiment.split_indices(1000, c)["test"] == a["test"]).all()
    c.sentiment.test_fraction = 0.0
    with pytest.raises(ConfigError, match="sentiment.test_fraction"):
        sentiment.split_indices(1000, c)


def test_unknown_task_is_a_one_line_error(capsys):
    assert cli.main(["train", "--config", "quickstart", "--config.task=tagging"]) == 2
    assert "config key 'task' = 'tagging'" in capsys.readouterr().err


def test_custom_cell_example_trains_with_the_standard_runner(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "experiments" / "custom_cell" / "peephole_lstm.py"),
                          "--steps", "120", "--workdir", str(tmp_path / "peep")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    config = json.loads((tmp_path / "peep" / "config.json").read_text())
    assert config["model"]["cell"] == "peephole_lstm"
    s = _summary(tmp_path / "peep")
    assert s["valid_ppl"] < 0.5 * 24  # well below the uniform perplexity of the 24 symbols


def test_the_task_table_and_the_config_check_name_the_same_tasks():
    assert set(tasks.TASKS) == set(config_lib.TASKS)


USER_CELLS = '''
from rnnjax.cells import CELLS, register_cell
register_cell("my_rnn", CELLS["rnn_tanh"])  # the tanh RNN's functions under a user's name
'''


def test_a_user_cell_module_trains_evaluates_samples_and_sweeps_from_the_shell(tmp_path):
    """`model.cell_module` is imported by every command that reads the config, in every process."""
    module = tmp_path / "my_cells.py"
    module.write_text(USER_CELLS)
    tiny_flags = [f"--config.{k}={v}" for k, v in {**tiny.LM, "train.max_steps": 12}.items()]

    def rnnjax(*argv):
        out = subprocess.run([sys.executable, "-m", "rnnjax", *argv], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    rnnjax("train", "--workdir", "mine", "--config.model.cell_module=my_cells.py", "--config.model.cell=my_rnn",
           *tiny_flags)
    rnnjax("train", "--workdir", "builtin", "--config.model.cell=rnn_tanh", *tiny_flags)
    assert _summary(tmp_path / "mine")["test_ppl"] == _summary(tmp_path / "builtin")["test_ppl"]
    scored = json.loads(rnnjax("eval", "--workdir", "mine", "--split", "valid").strip().splitlines()[-1])
    assert math.isclose(scored["perplexity"], _summary(tmp_path / "mine")["valid_ppl"], rel_tol=1e-6)
    first = json.loads((tmp_path / "mine" / "vocab.json").read_text())[0]
    assert rnnjax("sample", "--workdir", "mine", "--prime", first, "--length", "5").strip()
    (tmp_path / "grid.py").write_text(
        "from rnnjax.config import load, shipped_config_path\nfrom rnnjax.sweep import sweep\n"
        "def get_config(preset=None):\n    c = load(shipped_config_path('quickstart'))\n"
        "    c.model.cell_module = 'my_cells.py'\n"
        + "".join(f"    c.{k} = {v!r}\n" for k, v in {**tiny.LM, "train.max_steps": 12}.items())
        + "    return c\ndef get_sweep():\n    return sweep('config.model.cell', ['my_rnn'])\n")
    rnnjax("sweep", "--config", "grid.py", "--workdir", "grid")
    assert _summary(tmp_path / "grid" / "cell=my_rnn")["test_ppl"] == _summary(tmp_path / "mine")["test_ppl"]


def test_a_cell_module_that_cannot_be_imported_is_a_one_line_error(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no cells today')\n")
    for spec, why in ((str(tmp_path / "missing.py"), "no such file"), ("no_such_pkg.cells", "ModuleNotFoundError"),
                      (str(broken), "no cells today")):
        assert cli.main(["train", "--workdir", str(tmp_path / "w"), f"--config.model.cell_module={spec}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("rnnjax: error: config key 'model.cell_module'") and why in err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "w").exists()
