"""rnnjax.population: sweep points that differ only in seed / learning rate trained as one vmapped program.

Each member equals the same point trained alone (float tolerance); a preempted population, even
one whose members' newest checkpoints differ, resumes bit-identically; a non-finite member stops
alone, and a population whose every member does fails with one line; the launcher routes each
member's output to its own train.log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnjax import cli, config as config_lib, loop, population, rundir, sweep
from rnnjax.errors import ConfigError
from rnnjax.records import read_metrics

REPO = Path(__file__).resolve().parents[1]

SWEEP = '''
from rnnjax.config import defaults
from rnnjax.sweep import product, sweep


def get_config(preset=None):
    c = defaults()
    c.data.corpus = "synthetic"
    c.data.synthetic_vocab_size = 8
    c.data.synthetic_train_tokens = 2000
    c.data.synthetic_eval_tokens = 300
    c.model.cell = "{cell}"
    c.model.num_layers = 1
    c.model.hidden_size = 8
    c.model.embed_size = 4
    c.model.dropout = 0.2
    c.train.batch_size = 4
    c.train.seq_len = 8
    c.train.max_steps = 20
    c.train.optimizer = "{optimizer}"
    c.train.schedule = "cosine"
    c.train.learning_rate = 1e-2
    c.train.log_every = 1
    c.eval.every_steps = 10
    c.eval.batch_size = 2
    c.eval.seq_len = 50
    c.checkpoint.every_steps = 4
    c.sweep.vmap_axes = ("seed", "train.learning_rate")
    return c


def get_sweep():
    return product(sweep("config.seed", {seeds}), sweep("config.train.learning_rate", {lrs}))
'''


def write_sweep(tmp_path: Path, seeds=(0, 1, 2), lrs=(1e-2, 3e-3), cell="gru", optimizer="adam") -> str:
    path = tmp_path / "pop.py"
    path.write_text(SWEEP.format(seeds=list(seeds), lrs=list(lrs), cell=cell, optimizer=optimizer))
    return str(path)


def points(spec: str) -> list[sweep.Point]:
    return sweep.expand(config_lib.load(spec), sweep.load_grid(spec), {}, where=spec)


def train_population(spec: str, workdir: Path, names: list[str]) -> int:
    return cli.main(["sweep", "--config", spec, "--workdir", str(workdir)] + [a for n in names for a in ("--population", n)])


def train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / rundir.METRICS) if r.get("split") == "train"]


def records(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields, which differ between any two runs."""
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "wall_s")}
            for r in read_metrics(run_dir / rundir.METRICS)]


def test_groups_split_points_by_everything_outside_the_axes(tmp_path):
    spec = tmp_path / "g.py"
    spec.write_text(SWEEP.format(seeds=[0, 1], lrs=[0.1, 0.2], cell="gru", optimizer="adam").replace(
        'sweep("config.seed", [0, 1])', 'sweep("config.model.cell", ["gru", "lstm"]), sweep("config.seed", [0, 1])'))
    pts = points(str(spec))
    assert [[p.name for p in g] for g in population.groups(pts, ("seed",))] == [
        ["cell=gru,seed=0,lr=0.1", "cell=gru,seed=1,lr=0.1"], ["cell=gru,seed=0,lr=0.2", "cell=gru,seed=1,lr=0.2"],
        ["cell=lstm,seed=0,lr=0.1", "cell=lstm,seed=1,lr=0.1"], ["cell=lstm,seed=0,lr=0.2", "cell=lstm,seed=1,lr=0.2"]]
    assert len(population.groups(pts, ("seed", "train.learning_rate"))) == 2


@pytest.mark.parametrize("cell, seeds", [("gru", (0, 1)), ("lstm", (0,))])
def test_each_member_equals_the_point_trained_alone(tmp_path, cell, seeds):
    """Seeds x 2 learning rates as one program vs separate runs (dropout on, cosine schedule)."""
    spec = write_sweep(tmp_path, seeds=seeds, cell=cell)
    pts = points(spec)
    assert train_population(spec, tmp_path / "pop", [p.name for p in pts]) == 0
    for p in pts:
        solo = tmp_path / "solo" / p.name
        assert cli.main(["train", "--config", spec, "--workdir", str(solo)]
                        + [f"--config.{k}={v}" for k, v in p.overrides.items()]) == 0
        member = tmp_path / "pop" / p.name
        np.testing.assert_allclose(train_losses(member), train_losses(solo), rtol=2e-4)
        got, want = rundir.read_summary(member), rundir.read_summary(solo)
        assert got["steps"] == want["steps"] == 20
        np.testing.assert_allclose(got["test_ppl"], want["test_ppl"], rtol=2e-4)
        assert got["population"]["size"] == len(pts) and p.name in got["population"]["members"]
        # the member's directory holds what a separate run's does, checkpoints included
        assert sorted(x.name for x in member.iterdir()) == sorted(x.name for x in solo.iterdir())
        assert json.loads((member / rundir.CONFIG).read_text()) == json.loads((solo / rundir.CONFIG).read_text())


def sigterm_once_at(monkeypatch, at: int) -> None:
    """Fault injection: a real SIGTERM arrives once `at` steps are done (as if the job were preempted)."""
    due, fired = loop.due, []

    def due_then_signal(step, *args):
        if step == at and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return due(step, *args)

    monkeypatch.setattr(loop, "due", due_then_signal)


def test_a_preempted_population_resumes_bit_identically_even_from_uneven_checkpoints(tmp_path, monkeypatch, capsys):
    spec = write_sweep(tmp_path, seeds=(0, 1), lrs=(1e-2,))
    names = [p.name for p in points(spec)]
    assert train_population(spec, tmp_path / "whole", names) == 0

    capsys.readouterr()
    sigterm_once_at(monkeypatch, 7)
    assert train_population(spec, tmp_path / "cut", names) == 0
    assert "stopped by SIGTERM at step 8" in capsys.readouterr().out
    assert all(rundir.read_summary(tmp_path / "cut" / n) is None for n in names)
    # as if killed while member 1's step-8 checkpoint was being written: the group resumes from step 4
    ckpt = tmp_path / "cut" / names[1] / "checkpoints" / "8"
    assert ckpt.is_dir()
    subprocess.run(["rm", "-r", str(ckpt)], check=True)
    assert train_population(spec, tmp_path / "cut", names) == 0
    assert "resuming from the checkpoints at step 4" in capsys.readouterr().out
    for n in names:
        assert records(tmp_path / "cut" / n) == records(tmp_path / "whole" / n)
        assert rundir.read_summary(tmp_path / "cut" / n)["test_ppl"] == rundir.read_summary(tmp_path / "whole" / n)["test_ppl"]
    assert train_population(spec, tmp_path / "cut", names) == 0  # finished: nothing to do
    assert "finished" in capsys.readouterr().out


def test_a_nonfinite_member_stops_alone(tmp_path, capsys):
    spec = write_sweep(tmp_path, seeds=(0,), lrs=(0.1, 3e38), optimizer="sgd")
    good, bad = [p.name for p in points(spec)]
    assert train_population(spec, tmp_path / "pop", [good, bad]) == 3
    out = capsys.readouterr().out
    assert f"[{bad}] rnnjax: error: non-finite loss or gradient at step" in out
    assert rundir.read_summary(tmp_path / "pop" / bad) is None
    assert rundir.read_summary(tmp_path / "pop" / good)["steps"] == 20
    solo = tmp_path / "solo"
    assert cli.main(["train", "--config", spec, "--workdir", str(solo), "--config.seed=0",
                     "--config.train.learning_rate=0.1"]) == 0
    np.testing.assert_allclose(train_losses(tmp_path / "pop" / good), train_losses(solo), rtol=2e-4)


def test_a_population_whose_every_member_is_nonfinite_fails_with_one_line(tmp_path, capsys):
    spec = write_sweep(tmp_path, seeds=(0,), lrs=(3e38, 1e38), optimizer="sgd")
    names = [p.name for p in points(spec)]
    assert train_population(spec, tmp_path / "pop", names) == 3
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("rnnjax: error: every member of the population stopped on a "
                                                    "non-finite loss: non-finite loss or gradient at step")
    assert all(rundir.read_summary(tmp_path / "pop" / n) is None for n in names)


def test_members_that_cannot_share_a_program_are_refused(tmp_path, capsys):
    base = config_lib.load(write_sweep(tmp_path))
    other = config_lib.apply_overrides(base, {"model.hidden_size": "9"})
    with pytest.raises(ConfigError, match=r"members differ in model.hidden_size \(8 vs 9\)"):
        population.check_members([base, other])
    rollback = config_lib.apply_overrides(base, {"train.on_nonfinite": "rollback"})
    with pytest.raises(ConfigError, match="train.on_nonfinite"):
        population.check_members([rollback, rollback])
    spec = write_sweep(tmp_path)
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "s"), "--population", "seed=7"]) == 2
    assert "rnnjax: error: --population: no point of this sweep is named 'seed=7'" in capsys.readouterr().err


def test_the_sweep_launcher_runs_a_population_per_group_and_routes_each_members_log(tmp_path):
    spec = write_sweep(tmp_path, seeds=(0, 1), lrs=(1e-2, 3e-3))
    workdir = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "rnnjax", "sweep", "--config", spec, "--workdir", str(workdir),
                           "--config.sweep.vmap_axes=('seed',)"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 to run as 2 populations (seed)" in proc.stdout
    for p in points(spec):
        run_dir = workdir / p.name
        status = json.loads((run_dir / rundir.STATUS).read_text())
        assert status["status"] == "done" and len(status["population"]) == 2
        log = (run_dir / rundir.LOG).read_text()
        assert "test ppl" in log and "population of 2" in log
        others = [q.name for q in points(spec) if q.name != p.name]
        assert not any(f"[{o}]" in log for o in others)
    assert (workdir / "results.md").is_file()


def test_a_member_of_a_preempted_population_can_be_continued_alone(tmp_path, monkeypatch, capsys):
    spec = write_sweep(tmp_path, seeds=(0,), lrs=(1e-2, 3e-3))
    names = [p.name for p in points(spec)]
    assert train_population(spec, tmp_path / "whole", names) == 0
    sigterm_once_at(monkeypatch, 7)
    assert train_population(spec, tmp_path / "cut", names) == 0
    member = tmp_path / "cut" / names[1]
    assert cli.main(["train", "--workdir", str(member)]) == 0
    assert "resuming from the checkpoint at step 8" in capsys.readouterr().out
    np.testing.assert_allclose(train_losses(member), train_losses(tmp_path / "whole" / names[1]), rtol=2e-4)


def test_members_whose_seed_changes_the_vocabulary_are_refused(tmp_path, capsys, shared_data):
    """Sentiment's seed draws its split, and with it the vocabulary: members would not stack."""
    spec = tmp_path / "sent.py"
    spec.write_text(f'''
import sys

from rnnjax.sweep import sweep
sys.path.insert(0, {str(REPO / "configs")!r})
from sentiment import get_config as base


def get_config(preset=None):
    c = base()
    c.train.max_steps = 2
    c.sweep.vmap_axes = ("seed",)
    return c


def get_sweep():
    return sweep("config.seed", [0, 1])
''')
    names = [p.name for p in points(str(spec))]
    code = cli.main(["sweep", "--config", str(spec), "--workdir", str(tmp_path / "s"), "--data-dir", str(shared_data)]
                    + [a for n in names for a in ("--population", n)])
    assert code == 2
    assert "differ in their data's size or vocabulary" in capsys.readouterr().err
