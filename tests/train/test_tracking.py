"""Experiment tracking read back through the trackers' own formats: MLflow's local store via
its client, W&B's offline run files, TensorBoard's event files; across a kill and a resume."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from nnspec.compiler import UsageError, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.train.tracking.base import flatten_params
from nnspec.runtime.train.tracking.session import parse_track
from nnspec.runtime.train.trainer import TrainOptions, train
from tests.train.test_recipes import tiny
from tests.train.test_train import SimulatedKill, kill_after_epoch


def test_track_values_are_checked(monkeypatch):
    assert parse_track(["mlflow", "wandb:team/digits"]) == {"mlflow": None, "wandb": "team/digits"}
    assert parse_track(["mlflow:http://host:5000"]) == {"mlflow": "http://host:5000"}
    assert parse_track(["tensorboard"]) == {}
    with pytest.raises(UsageError, match="did you mean 'mlflow'"):
        parse_track(["mlfow"])
    with pytest.raises(UsageError, match="given twice"):
        parse_track(["wandb", "wandb:x"])
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None if n == "wandb" else real(n))
    with pytest.raises(UsageError, match=r'needs the wandb package\n    hint: pip install "nnspec\[tracking\]"'):
        parse_track(["wandb"])


def test_parameters_are_the_spec_flattened_by_key_and_index():
    spec = {"name": "n", "input": {"shape": [1, 8, 8]}, "labels": ["a", "b"],
            "network": [{"conv": {"out": 8}}, "relu"], "optimizer": {"lr": 0.1}, "x": {}}
    assert flatten_params(spec, {"epochs": 3, "init_from": None, "track": ["mlflow"]}) == {
        "name": "n",
        "input.shape": "[1, 8, 8]",
        "labels": "['a', 'b']",
        "network.0.conv.out": 8,
        "network.1": "relu",
        "optimizer.lr": 0.1,
        "x": "{}",
        "options.epochs": 3,
        "options.init_from": None,
        "options.track": "['mlflow']",
    }


def wandb_records(run_file: Path) -> list:
    """The protobuf records of a W&B `.wandb` file: a 7-byte header, then LevelDB-log chunks
    (CRC, length, type) in 32 KiB blocks; FULL=1, FIRST=2, MIDDLE=3, LAST=4."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    records, parts, position, block = [], [], 7, 32768
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += left
            continue
        parts.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def history_of(records) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json)
                         for i in record.history.item})
    return rows


@pytest.fixture
def offline_home(tmp_path, monkeypatch):
    """No W&B login, no MLflow server: a fresh home and working directory."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(home / name.lower()))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_mlflow_wandb_and_tensorboard_hold_each_epoch_once_across_a_kill(offline_home, monkeypatch):
    torch.set_num_threads(1)
    spec = tiny(epochs=2)
    out = offline_home / "runs" / "tiny"
    options = TrainOptions(out=out, progress=False, track=["mlflow", "wandb"])
    lines: list[str] = []
    with monkeypatch.context() as patch:
        kill_after_epoch(patch, 1)  # after epoch 1's checkpoint, before its metrics are logged
        with pytest.raises(SimulatedKill):
            train(load_spec(spec), options, log=lines.append)
    options.resume = True
    final = train(load_spec(spec), options, log=lines.append)
    assert any(line.startswith("tracking with wandb: offline run") for line in lines)
    assert main(["export", str(out), "-o", str(offline_home / "tiny.onnx"), "--no-verify"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{offline_home / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the resumed session continued the same MLflow run
    mlflow_run = runs[0]
    assert mlflow_run.info.status == "FINISHED"
    history = client.get_metric_history(mlflow_run.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(r["epoch"], r["train_loss"]) for r in records]
    assert mlflow_run.data.metrics["test_accuracy"] == final["test_accuracy"]
    params = mlflow_run.data.params
    assert params["optimizer.lr"] == "0.1" and params["train.epochs"] == "2"
    assert params["network.0.conv.out"] == "8" and params["options.track"] == "['mlflow', 'wandb']"
    artifacts = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
    assert {"spec.yaml", "final.json", "tiny.onnx"} <= artifacts

    run_files = sorted((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 3  # the killed session, the resumed one, the export
    assert len({f.stem for f in run_files}) == 1  # one W&B run id throughout
    every = [wandb_records(f) for f in run_files]
    history = [row for records_ in every for row in history_of(records_)]
    assert sorted((row["_step"], row["train_loss"]) for row in history) == [
        (r["epoch"], r["train_loss"]) for r in records
    ]
    first = every[0][[r.WhichOneof("record_type") for r in every[0]].index("run")].run
    config = {i.key: json.loads(i.value_json) for i in first.config.update}
    assert config["optimizer.lr"] == 0.1
    summary = {i.key: json.loads(i.value_json) for r in every[1]
               if r.WhichOneof("record_type") == "summary" for i in r.summary.update if i.key}
    assert summary["test_accuracy"] == final["test_accuracy"]
    def saved(records_) -> set[str]:
        return {f.path for r in records_ if r.WhichOneof("record_type") == "files"
                for f in r.files.files}

    assert "spec.yaml" in saved(every[0]) and "final.json" in saved(every[1])
    artifact = next(r.artifact for r in every[2] if r.WhichOneof("record_type") == "artifact")
    assert artifact.type == "model" and [e.path for e in artifact.manifest.contents] == ["tiny.onnx"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == [
        (r["epoch"], r["train_loss"]) for r in records
    ]


def test_a_resumed_run_keeps_its_tracker_targets(tmp_path):
    from nnspec.runtime.train.tracking.session import TRACKING_FILE, TrackingSession

    stored = {"mlflow": {"target": "sqlite:///a.db", "run": {"run_id": "x", "epoch": 1}}}
    (tmp_path / TRACKING_FILE).write_text(json.dumps(stored))
    with pytest.raises(UsageError, match="tracked with mlflow:sqlite:///a.db"):
        TrackingSession(tmp_path, {"mlflow": "sqlite:///b.db"}, resume=True)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / TRACKING_FILE).write_text('{"mlflow": {"run": 3}, "x": {}}')
    with pytest.raises(UsageError, match="is not a tracker record"):
        TrackingSession(tmp_path / "bad", {}, resume=True)
    # Without --track on resume, the run's trackers carry on.
    session = TrackingSession(tmp_path, {}, resume=True)
    assert list(session.trackers) == ["tensorboard", "mlflow"]
    assert session.trackers["mlflow"].target == "sqlite:///a.db"
