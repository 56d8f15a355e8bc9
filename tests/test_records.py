"""Metrics writers: TensorBoard event files hold what metrics.jsonl holds, one value per step, across
an interruption, a resume and a run trained further; without tensorboardX a run writes only JSONL.

The event files are read back here by hand (tensorboardX writes them but has no reader): each
record is length (u64) + masked CRC32C of it (u32) + an `Event` protobuf + its masked CRC32C (u32).
TensorBoard reads a run's files in name order and hides a resumed run's stale values by one of
two rules, both modelled here:
  - its Python loader: a `SessionLog.START` at step S hides every earlier event at step S or later;
  - its Rust loader ("data server"): a value at step S hides the same tag's values at S or later.
The first must show exactly metrics.jsonl's values; the second too, but for a tag a resumed run
logs nothing of at its first step.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnjax import cli, progress, rundir
from rnnjax.records import read_metrics, scalars

import tiny

TINY = {**tiny.LM, "checkpoint.every_steps": 5}


def train(workdir: Path, **overrides) -> int:
    args = ["train", "--config", "quickstart", "--workdir", str(workdir)]
    return cli.main(args + [f"--config.{k}={v}" for k, v in {**TINY, **overrides}.items()])


def events(run_dir: Path) -> list:
    """Every `Event` of the run's event files, in the order TensorBoard reads them; CRCs checked."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    out = []
    for path in sorted((run_dir / rundir.TENSORBOARD).glob("*tfevents*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            length, header_crc = struct.unpack_from("<QI", data, at)
            body = data[at + 12:at + 12 + length]
            (body_crc,) = struct.unpack_from("<I", data, at + 12 + length)
            assert (header_crc, body_crc) == (masked_crc32c(data[at:at + 8]), masked_crc32c(body)), path
            out.append(Event.FromString(body))
            at += 16 + length
    return out


def python_loader(evs: list) -> dict:
    """tag -> [(step, value)] as TensorBoard's Python loader shows them (restart markers purge)."""
    curves: dict = {}
    for e in evs:
        if e.HasField("session_log") and e.session_log.status == e.session_log.START:
            curves = {tag: [(s, v) for s, v in points if s < e.step] for tag, points in curves.items()}
        for value in e.summary.value:
            curves.setdefault(value.tag, []).append((e.step, value.simple_value))
    return {tag: points for tag, points in curves.items() if points}


def rust_loader(evs: list) -> dict:
    """tag -> [(step, value)] as TensorBoard's Rust loader shows them (each tag's steps preempt)."""
    curves: dict = {}
    for e in evs:
        for value in e.summary.value:
            points = curves.setdefault(value.tag, [])
            points[:] = [(s, v) for s, v in points if s < e.step] + [(e.step, value.simple_value)]
    return curves


def jsonl_curves(run_dir: Path) -> dict:
    """tag -> [(step, value)] of metrics.jsonl, at the float32 precision of TensorBoard's scalars."""
    curves: dict = {}
    for record in read_metrics(run_dir / rundir.METRICS):
        for tag, value in scalars(record).items():
            curves.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    return curves


def test_scalars_of_every_kind_of_record():
    assert scalars({"step": 10, "epoch": 0.4, "split": "train", "loss": 1.5, "perplexity": 4.48, "tokens_per_s": 9e3,
                    "lr": 1.0, "grad_norm": 0.7}) == {
        "train/loss": 1.5, "train/perplexity": 4.48, "train/tokens_per_s": 9e3, "train/lr": 1.0, "train/grad_norm": 0.7}
    assert scalars({"step": 24, "epoch": 1.0, "split": "valid", "loss": 1.2, "perplexity": 3.3, "bpt": 1.7,
                    "wall_s": 3.0}) == {"valid/loss": 1.2, "valid/perplexity": 3.3, "valid/bpt": 1.7}
    assert scalars({"step": 50, "split": "test", "mse": 0.01}) == {"test/mse": 0.01}  # sine
    assert scalars({"step": 50, "split": "test", "accuracy": 1}) == {"test/accuracy": 1.0}  # echo
    assert scalars({"step": 5, "epoch": 0.2, "event": "rollback", "nonfinite_step": 8, "lr_scale": 0.5}) == {
        "rollback/nonfinite_step": 8.0, "rollback/lr_scale": 0.5}
    assert scalars({"step": 5, "split": "valid", "loss": "nan", "bpt": float("inf"), "note": None, "best": True}) == {}
    assert scalars({"step": 5, "loss": 1.0}) == {}


def test_tensorboard_events_hold_the_jsonl_values(tmp_path):
    pytest.importorskip("tensorboardX")
    assert train(tmp_path, **{"train.max_steps": 30}) == 0
    expected = jsonl_curves(tmp_path)
    assert {"train/loss", "train/perplexity", "train/lr", "train/grad_norm", "train/tokens_per_s", "valid/loss",
            "valid/perplexity", "valid/bpt", "test/perplexity"} <= set(expected)
    assert [s for s, _ in expected["train/loss"]] == list(range(1, 31))
    evs = events(tmp_path)
    assert len(list((tmp_path / rundir.TENSORBOARD).iterdir())) == 1
    assert python_loader(evs) == rust_loader(evs) == expected


def test_a_resumed_run_shows_each_step_once(tmp_path, monkeypatch):
    """Interrupted after step 7 (checkpoint at 5), resumed, then trained further past its end: the
    records past each checkpoint are cut and logged again, and TensorBoard shows them once."""
    pytest.importorskip("tensorboardX")

    class Killed(Exception):
        pass

    update = progress.Progress.update

    def dying_update(self, step):
        if step == 8:
            raise Killed
        update(self, step)

    monkeypatch.setattr(progress.Progress, "update", dying_update)
    with pytest.raises(Killed):
        train(tmp_path, **{"train.max_steps": 12})
    monkeypatch.setattr(progress.Progress, "update", update)
    assert [r["step"] for r in read_metrics(tmp_path / rundir.METRICS)] == list(range(1, 8))
    assert train(tmp_path, **{"train.max_steps": 12}) == 0
    evs, expected = events(tmp_path), jsonl_curves(tmp_path)
    assert [s for s, _ in python_loader(evs)["train/loss"]] == list(range(1, 13))
    assert python_loader(evs) == expected
    # The Rust loader ignores restart markers: a tag the resumed run does not log at step 6 (tokens/s,
    # not measured yet) keeps the killed run's value there; every other tag shows metrics.jsonl's.
    rust, tokens_per_s = rust_loader(evs), dict(expected.pop("train/tokens_per_s"))
    assert dict(rust.pop("train/tokens_per_s")).keys() == tokens_per_s.keys() | {6} and rust == expected

    # Trained further: the test record at step 12 is cut; the step-12 train and valid records stay.
    assert train(tmp_path, **{"train.max_steps": 15}) == 0
    curves = python_loader(events(tmp_path))
    assert curves == jsonl_curves(tmp_path)
    assert [s for s, _ in curves["test/perplexity"]] == [15] and [s for s, _ in curves["valid/loss"]] == [12, 15]
    assert len(list((tmp_path / rundir.TENSORBOARD).iterdir())) == 3


def test_without_tensorboardx_a_run_writes_only_jsonl(tmp_path, monkeypatch):
    """And installed later, the continued run's event files get every record metrics.jsonl keeps."""
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` raises ImportError
        assert train(tmp_path, **{"train.max_steps": 6}) == 0
    assert not (tmp_path / rundir.TENSORBOARD).exists()
    assert [r["step"] for r in read_metrics(tmp_path / rundir.METRICS) if r["split"] == "train"] == list(range(1, 7))
    pytest.importorskip("tensorboardX")
    assert train(tmp_path, **{"train.max_steps": 9}) == 0
    evs = events(tmp_path)
    assert python_loader(evs) == rust_loader(evs) == jsonl_curves(tmp_path)
    assert [s for s, _ in jsonl_curves(tmp_path)["train/loss"]] == list(range(1, 10))
