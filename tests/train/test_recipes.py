"""Training recipes end to end: fine-tuning from a run, gradient accumulation, EMA, best and
early stopping, and exact resume with all of them on."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from nnspec.compiler import DataError, build_model, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.train.checkpoint import load_checkpoint
from nnspec.runtime.train.data import load_data
from nnspec.runtime.train.trainer import TrainOptions, train
from tests.train.test_train import SimulatedKill, kill_after_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def run(spec: dict, out, **options) -> dict:
    return train(load_spec(spec), TrainOptions(out=out, progress=False, **options), log=_drop)


def _drop(_: str) -> None:
    pass


def cnn(classes: int, data: str, **train_settings) -> dict:
    return {
        "nnspec": 1,
        "name": "cnn",
        "input": {"shape": [1, 8, 8]},
        "normalize": "auto",
        "network": [
            {"conv": {"out": 16, "kernel": 3, "padding": 1, "bias": False}, "id": "stem"},
            {"batchnorm": {}, "id": "stem_bn"},
            "relu",
            {"conv": {"out": 32, "kernel": 3, "padding": 1, "stride": 2}, "id": "body"},
            "relu",
            "global_avg_pool",
            {"linear": {"out": classes}, "id": "head"},
        ],
        "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9},
        "train": {"data": data, "epochs": 1, "batch_size": 32, **train_settings},
    }


def digits_classes(path, classes: list[int]) -> str:
    """The bundled digits restricted to `classes`, relabelled 0..k-1, as an .npz source."""
    splits = load_data("digits", (1, 8, 8), 0.0, 0.0)
    x = torch.stack([s[0] for s in splits.train]).numpy()
    y = torch.stack([s[1] for s in splits.train]).numpy()
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    np.savez(path, x=x[keep], y=np.array([relabel[v] for v in y[keep]]))
    return str(path)


def test_fine_tuning_a_run_into_a_new_head_beats_training_from_scratch(tmp_path):
    source = digits_classes(tmp_path / "first.npz", [0, 1, 2, 3, 4, 5])
    target = digits_classes(tmp_path / "second.npz", [6, 7, 8, 9])
    run(cnn(6, source, epochs=4), tmp_path / "pretrained")

    new_head = cnn(4, target, freeze={"params": ["stem*", "body"]})
    finetuned = run(new_head, tmp_path / "finetuned", init_from=tmp_path / "pretrained")
    scratch = run(cnn(4, target), tmp_path / "scratch")

    report = json.loads((tmp_path / "finetuned" / "init_from.json").read_text())
    assert {s["id"] for s in report["shape_skipped"]} == {"head.weight", "head.bias"}
    assert set(report["loaded"]) >= {"stem.weight", "stem_bn.running_mean", "body.weight"}
    assert report["missing"] == [] and report["unexpected"] == []
    pretrained = load_checkpoint(tmp_path / "pretrained" / "checkpoints", "best").weights
    tuned = load_checkpoint(tmp_path / "finetuned" / "checkpoints", "best").weights
    # The frozen backbone kept the pretrained tensors, batch-norm statistics included.
    for key in ("stem.weight", "stem_bn.running_mean", "body.weight"):
        assert torch.equal(tuned[key], pretrained[key]), key
    # Measured 0.56 against 0.27 after one epoch.
    assert finetuned["test_accuracy"] > scratch["test_accuracy"] + 0.15

    with pytest.raises(DataError, match="--strict"):
        run(new_head, tmp_path / "strict", init_from=tmp_path / "pretrained", strict=True)


def mlp(batch_size: int, accumulate: int) -> dict:
    # No batch norm and no dropout: a batch of b*N and N accumulated batches of b see the same.
    return {
        "nnspec": 1,
        "name": "mlp",
        "input": {"shape": [1, 8, 8]},
        "normalize": "auto",
        "network": ["flatten", {"linear": {"out": 32}}, "tanh", {"linear": {"out": 10}}],
        "optimizer": {"type": "sgd", "lr": 0.2, "momentum": 0.9, "weight_decay": 1e-3},
        "schedule": {"lr": {"type": "cosine", "warmup_epochs": 0.5}},
        "loss": {"label_smoothing": 0.1},
        "train": {"epochs": 2, "batch_size": batch_size, "accumulate": accumulate},
    }


def test_accumulating_n_batches_of_b_equals_batches_of_b_times_n(tmp_path):
    x = np.random.default_rng(0).normal(size=(320, 1, 8, 8)).astype(np.float32)
    y = np.arange(320) % 10
    np.savez(tmp_path / "d.npz", x=x, y=y, x_test=x[:40], y_test=y[:40])
    data = str(tmp_path / "d.npz")
    # 320 samples, val/test cut from them: 288 train = 9 batches of 32 = 36 of 8.
    big = run({**mlp(32, 1), "train": {**mlp(32, 1)["train"], "val_fraction": 0.1}},
              tmp_path / "big", data=data)
    small = run({**mlp(8, 4), "train": {**mlp(8, 4)["train"], "val_fraction": 0.1}},
                tmp_path / "small", data=data)
    assert big["steps"] == small["steps"] == 2 * 9
    ours = load_checkpoint(tmp_path / "small" / "checkpoints", "last").weights
    theirs = load_checkpoint(tmp_path / "big" / "checkpoints", "last").weights
    for key in theirs:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert not torch.equal(ours["linear1.weight"], theirs["linear1.weight"])  # float order


def tiny(**train_settings) -> dict:
    return {
        "nnspec": 1,
        "name": "tiny",
        "input": {"shape": [1, 8, 8]},
        "normalize": "auto",
        "network": [
            {"conv": {"out": 8, "kernel": 3, "padding": 1}, "id": "stem"},
            "batchnorm",
            "relu",
            "global_avg_pool",
            {"dropout": {"p": 0.2}},
            {"linear": {"out": 10}, "id": "head"},
        ],
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9},
        "train": {"epochs": 3, "batch_size": 128, **train_settings},
    }


def assert_same_run(a, b) -> None:
    """Bitwise equal `last` checkpoints: weights, EMA, optimizer state and recipes' state."""
    ours, theirs = load_checkpoint(a, "last"), load_checkpoint(b, "last")
    for name, weights in [("model", ours.weights), *ours.extra_weights.items()]:
        reference = theirs.weights if name == "model" else theirs.extra_weights[name]
        for key, value in weights.items():
            assert torch.equal(value, reference[key]), (name, key)
    for index, entries in ours.optimizer_state["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, theirs.optimizer_state["state"][index][key]), key
    assert untimed(ours.info["state"]) == untimed(theirs.info["state"])


TIMINGS = ("train_seconds", "images_per_second", "epoch_seconds")


def untimed(value):
    """`value` without wall-clock figures, which differ between any two runs."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMINGS}
    return value


def test_a_run_with_every_recipe_resumes_bitwise_equal_after_a_kill(tmp_path, monkeypatch):
    spec = tiny(
        batch_size=64,
        accumulate=3,
        ema={"decay": 0.8, "warmup": True},
        freeze={"params": ["stem"], "unfreeze_at_epoch": 2},
        best={"metric": "val_ema_loss"},
        early_stopping={"metric": "val_loss", "patience": 5},
    )
    spec["optimizer"]["groups"] = [{"params": ["stem"], "lr": 0.01}]  # layer-wise lr
    straight = run(spec, tmp_path / "straight")
    with monkeypatch.context() as patch:
        kill_after_epoch(patch, 1)
        with pytest.raises(SimulatedKill):
            run(spec, tmp_path / "resumed")
    resumed = run(spec, tmp_path / "resumed", resume=True)
    assert_same_run(tmp_path / "straight" / "checkpoints", tmp_path / "resumed" / "checkpoints")
    for key in ("test_accuracy", "test_ema_accuracy", "best_epoch", "best_value", "steps"):
        assert resumed[key] == straight[key], key
    # 1259 samples: 19 batches of 64 per epoch, 6 optimizer steps of 3 batches and 1 of one.
    assert straight["steps"] == 3 * 7 and straight["best_metric"] == "val_ema_loss"
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").open()]
    best = min(records, key=lambda r: r["val_ema_loss"])
    assert straight["best_epoch"] == best["epoch"] and straight["best_value"] == best["val_ema_loss"]
    assert all(r["val_ema_loss"] != r["val_loss"] for r in records)
    # The unfrozen stem trained at its own group's lr.
    groups = load_checkpoint(tmp_path / "straight" / "checkpoints", "last").optimizer_state
    assert sorted(g["lr"] for g in groups["param_groups"]) == [0.01, 0.1]
    last = load_checkpoint(tmp_path / "straight" / "checkpoints", "last").weights
    assert not torch.equal(last["stem.weight"], build_model(load_spec(spec), seed=0).stem.weight)


def test_early_stopping_ends_the_run_and_says_why(tmp_path):
    # An accuracy can never improve by more than 1: epoch 1 is the best, 2 and 3 are not.
    spec = tiny(epochs=10, early_stopping={"metric": "val_accuracy", "patience": 2, "min_delta": 1})
    final = run(spec, tmp_path / "run")
    assert final["epochs"] == 3 and final["stop_reason"] == "early_stopping"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    # Resuming a stopped run trains no further.
    assert run(spec, tmp_path / "run", resume=True)["epochs"] == 3


def test_the_ema_weights_export_to_onnx_and_differ_from_the_raw_ones(tmp_path, capsys):
    out = tmp_path / "run"
    run(tiny(epochs=2, ema={"decay": 0.9}), out)
    assert (out / "checkpoints" / "best.ema.safetensors").is_file()
    path = tmp_path / "ema.onnx"
    assert main(["export", str(out), "-o", str(path), "--ema", "--no-verify"]) == 0
    x = np.random.default_rng(0).uniform(0, 16, size=(4, 1, 8, 8)).astype(np.float32)
    exported = ort.InferenceSession(str(path)).run(None, {"input": x})[0]

    def torch_output(weights: str) -> np.ndarray:
        model = build_model(load_spec(out / "spec.yaml"))
        model.load_state_dict(load_file(out / "checkpoints" / weights))
        stats = json.loads((out / "normalization.json").read_text())
        model.set_normalization(stats["mean"], stats["std"])
        return model.eval()(torch.from_numpy(x)).detach().numpy()

    np.testing.assert_allclose(exported, torch_output("best.ema.safetensors"), rtol=1e-4, atol=1e-4)
    assert np.abs(exported - torch_output("best.safetensors")).max() > 1e-3

    assert main(["export", str(out), "--ema", "--weights", str(path)]) == 2
    run(tiny(epochs=1), tmp_path / "plain")
    assert main(["export", str(tmp_path / "plain"), "-o", str(tmp_path / "p.onnx"), "--ema"]) == 2
    assert "trained without a moving average" in capsys.readouterr().err


def test_on_epoch_can_stop_a_run_and_says_why(tmp_path):
    seen = []

    def enough(record: dict) -> str | None:
        seen.append(record["epoch"])
        return "target reached" if record["epoch"] == 2 else None

    final = train(load_spec(tiny(epochs=5)), TrainOptions(out=tmp_path / "r", progress=False),
                  log=_drop, on_epoch=enough)
    assert seen == [1, 2] and final["epochs"] == 2 and final["stop_reason"] == "target reached"
