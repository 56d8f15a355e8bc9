"""`rnnjax sweep --launcher ray` on a Ray head started here (127.0.0.1, 2 CPUs, no usage statistics):
results equal the local launcher's, also when the two launchers share a sweep directory; a point whose
Ray worker is killed mid-run is retried and resumes from its checkpoint; one-line errors without a cluster."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rnnjax import cli, launch, ray_launcher
from test_sweep import descendants, expand, results_rows, write_sweep

ray = pytest.importorskip("ray", reason="the ray launcher needs the 'ray' extra")

GRID = 'product(sweep("config.model.cell", ["gru", "lstm"]), sweep("config.seed", [0]))'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A Ray head on 127.0.0.1 with 2 CPUs, its address; every process it started ends with the module.

    Ray's own cleanup of a dead worker's process group is off, so the kill test shows that the launcher's
    guard alone ends the old training process (older Ray versions have no such cleanup)."""
    port, temp = free_port(), tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live there
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_process_group_cleanup_enabled": "0",
           "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = Path(temp) / "head.log"
    with open(out, "w") as f:
        head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
                                 f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
                                 "--node-ip-address=127.0.0.1", "--disable-usage-stats", f"--temp-dir={temp}"],
                                stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 120
        while "Ray runtime started" not in out.read_text():
            assert head.poll() is None and time.time() < deadline, out.read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def stop(head: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` stops the processes it started; any left are killed."""
    left = descendants(head.pid) if head.poll() is None else []
    head.terminate()
    try:
        head.wait(60)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def launches(workdir: Path) -> list[dict]:
    return json.loads((workdir / "sweep.json").read_text())["launches"]


def test_ray_gives_the_local_launchers_results_and_report_merges_launchers(tmp_path, cluster, capsys):
    spec = write_sweep(tmp_path, GRID)
    names = [p.name for p in expand(spec)]
    ray_flags = ["--launcher", "ray", "--ray-address", cluster, "--cpus-per-point", "1"]
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "local"), "--jobs", "2"]) == 0
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "ray"), *ray_flags]) == 0
    out = capsys.readouterr().out
    assert "2 submitted as 2 Ray tasks of 1 CPUs and 0 GPUs each" in out
    assert all(f"done {name}: test_ppl " in out for name in names)
    assert results_rows(tmp_path / "ray") == results_rows(tmp_path / "local")
    assert launches(tmp_path / "ray")[-1]["launcher"] == "ray" and set(launches(tmp_path / "ray")[-1]["jobs"]) == \
        set(names)

    mixed = tmp_path / "mixed"  # one point run by the local launcher, the other by Ray
    assert cli.main(["sweep", "--config", spec, "--workdir", str(mixed), "--shard", "0/2"]) == 0
    assert cli.main(["sweep", "--config", spec, "--workdir", str(mixed), *ray_flags]) == 0
    assert "1 finished (skipped)" in capsys.readouterr().out
    assert results_rows(mixed) == results_rows(tmp_path / "local")
    assert [(x["launcher"], list(x["jobs"])) for x in launches(mixed)] == [("local", names[:1]), ("ray", names[1:])]


def test_a_population_is_one_ray_task_with_the_local_launchers_results(tmp_path, cluster, capsys):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0, 1])')
    vmap = "--config.sweep.vmap_axes=('seed',)"
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "local"), vmap]) == 0
    assert cli.main(["sweep", "--config", spec, "--workdir", str(tmp_path / "ray"), vmap, "--launcher", "ray",
                     "--ray-address", cluster, "--cpus-per-point", "1"]) == 0
    out = capsys.readouterr().out
    assert "2 submitted as 1 Ray tasks of 1 CPUs and 0 GPUs each (max_retries=5) (1 populations)" in out
    assert results_rows(tmp_path / "ray") == results_rows(tmp_path / "local")


def test_a_killed_worker_is_retried_and_ctrl_c_cancels_and_both_resume_from_a_checkpoint(tmp_path, cluster):
    spec = write_sweep(tmp_path, 'sweep("config.seed", [0])', steps=2000, train_tokens=80_000)  # outlasts the cancel
    workdir, overrides = tmp_path / "s", {"checkpoint.every_steps": "20"}
    points = expand(spec, overrides)
    launch.record_sweep(workdir, spec, overrides, points)
    run_dir = workdir / points[0].name
    log = run_dir / "train.log"
    conn = ray_launcher.connect(cluster)
    try:
        tasks = ray_launcher.submit(conn, spec, workdir, points, ray_launcher.Resources(1, 0))
        wait_for(lambda: any(p.name.isdigit() and int(p.name) >= 20 for p in (run_dir / "checkpoints").glob("*")))
        train_pid = json.loads((run_dir / ".lock").read_text())["pid"]
        worker_pid = int(Path(f"/proc/{train_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "ray::" in Path(f"/proc/{worker_pid}/cmdline").read_text()
        killed = time.time()
        os.kill(worker_pid, signal.SIGKILL)
        wait_for(lambda: not alive(train_pid), timeout=30)  # the worker's death ends it (setpriv --pdeathsig)

        # the retry resumes; once it trains, Ctrl-C (here SIGTERM) to this driver cancels it with a checkpoint
        retrained = re.compile(r"resuming from the checkpoint at step (\d+).*\n(.*\n)*step +\d+/")
        threading.Thread(target=lambda: (wait_for(lambda: retrained.search(log.read_text())),
                                         os.kill(os.getpid(), signal.SIGTERM)), daemon=True).start()
        with pytest.raises(SystemExit) as stopped:
            ray_launcher.wait(conn, workdir, tasks)
        assert stopped.value.code == 130 and "stopped by SIGTERM" in log.read_text()
        assert launch.point_status(run_dir) == "interrupted"
        assert ray_launcher.wait(conn, workdir, ray_launcher.submit(conn, spec, workdir, points,
                                                                    ray_launcher.Resources(1, 0))) == 0
    finally:
        conn.shutdown()
    resumed = re.findall(r"resuming from the checkpoint at step (\d+)", log.read_text())
    assert len(resumed) == 2 and all(int(step) >= 20 for step in resumed), resumed
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "done" and status["started"] > killed
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2000
    assert [x["launcher"] for x in launches(workdir)] == ["ray", "ray"]


def wait_for(condition, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_no_cluster_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    spec = write_sweep(tmp_path, GRID)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = ["sweep", "--config", spec, "--workdir", str(tmp_path / "s"), "--launcher", "ray"]
    assert cli.main(sweep) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnjax: error: --launcher ray runs on a running Ray cluster: start one with `ray start "
                          "--head`") and err.count("\n") == 1
    assert cli.main(sweep + ["--ray-address", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "no Ray cluster answers there" in err and err.count("\n") == 1
    assert cli.main(sweep + ["--jobs", "2"]) == 2
    assert "the cluster's free CPUs and GPUs decide" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert cli.main(sweep + ["--dry-run", "--gpus-per-point", "1"]) == 0
    assert "would submit 2 Ray tasks of 2 CPUs and 1 GPUs each (max_retries=5)" in capsys.readouterr().out
