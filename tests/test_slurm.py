"""`rnnjax sweep --launcher slurm`: the array job submitit sends to a (mocked) sbatch, and the same
jobs run by submitit's local executor: results equal the local launcher's, a preempted point is
requeued and resumes from its checkpoint. There is no SLURM here, as in submitit's own tests."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from rnnjax import cli, launch, report, slurm
from test_sweep import descendants, expand, results_rows, write_sweep

submitit = pytest.importorskip("submitit", reason="the slurm launcher needs the 'slurm' extra (submitit)")

GRID = 'product(sweep("config.model.cell", ["gru", "lstm"]), sweep("config.seed", [0]))'


def fake_slurm(tmp_path: Path, monkeypatch) -> Path:
    """`sbatch`, `sacct` and `srun` on PATH: sbatch keeps a copy of the script it was given and answers a job id."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch_script.sh"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {record}\necho "Submitted batch job 4242"\n')
    (bin_dir / "sacct").write_text("#!/bin/sh\necho 'JobID|State'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "sacct", "srun"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return record


def test_dry_run_shows_the_array_request(tmp_path, capsys):
    spec = write_sweep(tmp_path, GRID)
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "s"), "--launcher", "slurm",
                     "--dry-run", "--partition", "gpu", "--gpus-per-point", "1", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "would submit 2 array tasks as one array job: sbatch --array=0-1%1 --time=240 --cpus-per-task=2 " \
           "--signal=USR2@90" in out and "--partition=gpu --gpus-per-node=1" in out
    assert not (tmp_path / "s").exists()


def test_one_array_job_goes_to_sbatch_and_its_ids_are_recorded(tmp_path, capsys, monkeypatch):
    script = fake_slurm(tmp_path, monkeypatch)
    spec, workdir = write_sweep(tmp_path, GRID), tmp_path / "s"
    assert cli.main(["sweep", "--config", spec, "--workdir", str(workdir), "--launcher", "slurm",
                     "--partition", "debug", "--time-min", "30", "--jobs", "2", "--mem-gb", "4"]) == 0
    assert "submitted 2 of 2 points as SLURM job 4242" in capsys.readouterr().out
    lines = script.read_text().splitlines()
    for flag in ("--array=0-1%2", "--partition=debug", "--time=30", "--cpus-per-task=2", "--signal=USR2@90",
                 "--mem=4GB", "--nodes=1"):
        assert f"#SBATCH {flag}" in lines, flag
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)
    launches = json.loads((workdir / "sweep.json").read_text())["launches"]
    assert launches[-1]["launcher"] == "slurm"
    assert launches[-1]["jobs"] == {"cell=gru,seed=0": "4242_0", "cell=lstm,seed=0": "4242_1"}


def test_local_executor_gives_the_local_launchers_results(tmp_path, capsys):
    spec = write_sweep(tmp_path, GRID)
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "local"), "--jobs", "2"]) == 0
    workdir = tmp_path / "submitit"
    points = expand(spec)
    launch.record_sweep(workdir, spec, {}, points)
    jobs = slurm.submit(slurm.executor(workdir, slurm.Resources(), jobs=2, cluster="local"), spec, workdir, points)
    assert [j.result()[0]["status"] for j in jobs] == ["done", "done"]
    report.write_report(workdir)
    assert results_rows(workdir) == results_rows(tmp_path / "local")
    assert json.loads((workdir / "sweep.json").read_text())["launches"][-1]["launcher"] == "slurm"
    capsys.readouterr()
    assert slurm.submit(slurm.executor(workdir, slurm.Resources(), jobs=2, cluster="local"), spec, workdir,
                        points, log=print) == []
    assert "nothing submitted" in capsys.readouterr().out


def test_a_population_is_one_array_task_and_gives_the_local_launchers_results(tmp_path):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0, 1])')
    vmap = {"sweep.vmap_axes": "('seed',)"}
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "local"),
                     "--config.sweep.vmap_axes=('seed',)"]) == 0
    workdir = tmp_path / "submitit"
    points = expand(spec, vmap)
    launch.record_sweep(workdir, spec, vmap, points)
    jobs = slurm.submit(slurm.executor(workdir, slurm.Resources(), jobs=2, cluster="local"), spec, workdir, points,
                        vmap_axes=("seed",), overrides=vmap)
    assert len(jobs) == 1 and [s["status"] for s in jobs[0].result()] == ["done", "done"]
    report.write_report(workdir)
    assert results_rows(workdir) == results_rows(tmp_path / "local")


def test_a_preempted_point_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0])', steps=400, train_tokens=20_000)
    workdir = tmp_path / "s"
    points = expand(spec, {"checkpoint.every_steps": "20"})
    launch.record_sweep(workdir, spec, {"checkpoint.every_steps": "20"}, points)
    (job,) = slurm.submit(slurm.executor(workdir, slurm.Resources(), jobs=1, cluster="local"), spec, workdir,
                          points)
    run_dir = workdir / points[0].name
    deadline = time.time() + 240
    while not any(p.name.isdigit() and int(p.name) > 0 for p in (run_dir / "checkpoints").glob("*")):
        assert time.time() < deadline and not job.done(), "no checkpoint before the preemption"
        time.sleep(0.1)
    for pid in descendants(job._process.pid):  # what SLURM does ahead of a preemption: SIGUSR2 to the job step
        os.kill(pid, signal.SIGUSR2)
    assert job.result()[0]["status"] == "done"
    log = (run_dir / "train.log").read_text()
    assert "stopped by SIGUSR2" in log and "resuming from the checkpoint at step" in log
    assert "Requeued job" in (workdir / slurm.LOGS / job.job_id / f"{job.job_id}_0_log.err").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 400
