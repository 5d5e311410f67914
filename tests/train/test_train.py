"""`nnspec train` / `nnspec eval` end to end on small specs and the bundled digits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from nnspec.compiler import TrainingError, build_model, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.train import trainer as train_module
from nnspec.runtime.train.checkpoint import load_checkpoint
from nnspec.runtime.train.data import channel_stats, load_data
from nnspec.runtime.train.evaluate import evaluate_run
from nnspec.runtime.train.trainer import TrainOptions, train, training_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cnn(**sections) -> dict:
    return {
        "nnspec": 1,
        "name": "tiny",
        "input": {"shape": [1, 8, 8]},
        "normalize": "auto",
        "network": [
            {"conv": {"out": 8, "kernel": 3, "padding": 1}},
            "batchnorm",
            "relu",
            "global_avg_pool",
            {"dropout": {"p": 0.3}},
            {"linear": {"out": 10}},
        ],
        "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
        "train": {"epochs": 2, "batch_size": 128},
        **sections,
    }


def run(spec: dict, out, **options) -> dict:
    return train(load_spec(spec), TrainOptions(out=out, progress=False, **options), log=_drop)


def _drop(_: str) -> None:
    pass


def test_run_directory_holds_everything_to_resume_evaluate_and_export(tmp_path):
    out = tmp_path / "run"
    final = run(small_cnn(), out)

    resolved = load_spec(out / "spec.yaml")
    mean, std = channel_stats(load_data("digits", (1, 8, 8)).train)
    assert list(resolved.normalize.mean) == pytest.approx(mean)
    assert list(resolved.normalize.std) == pytest.approx(std)
    assert json.loads((out / "normalization.json").read_text())["mean"] == pytest.approx(mean)
    assert resolved.train.epochs == 2 and resolved.train.data == "digits"

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "momentum"):
        assert all(key in r for r in lines), key
    assert lines[0]["momentum"] == 0.9 and lines[0]["images_per_second"] > 0
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())

    best = load_checkpoint(out / "checkpoints", "best")
    assert best.info["state"]["epoch"] == final["best_epoch"]
    assert load_file(out / "checkpoints" / "last.safetensors").keys() == best.weights.keys()
    assert json.loads((out / "final.json").read_text()) == final
    assert final["epochs"] == 2 and final["steps"] == 2 * (1259 // 128)
    # `nnspec eval` reproduces the final test figures from the run directory alone.
    result = evaluate_run(out, device="cpu")
    assert result["accuracy"] == final["test_accuracy"]
    assert result["count"] == 359 == final["test_count"]


class SimulatedKill(BaseException):
    pass


def kill_after_epoch(monkeypatch, epoch: int) -> None:
    real = train_module.save_checkpoint

    def save_then_die(directory, name, model, optimizer, info, *extra):
        real(directory, name, model, optimizer, info, *extra)
        if name == "last" and info["state"]["epoch"] == epoch:
            raise SimulatedKill

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_die)


def assert_same_checkpoint(a, b) -> None:
    ours, theirs = load_checkpoint(a, "last"), load_checkpoint(b, "last")
    assert ours.weights.keys() == theirs.weights.keys()
    for key, value in ours.weights.items():
        assert torch.equal(value, theirs.weights[key]), key
    for index, entries in ours.optimizer_state["state"].items():
        for name, value in entries.items():
            assert torch.equal(value, theirs.optimizer_state["state"][index][name]), name
    assert ours.info["state"]["step"] == theirs.info["state"]["step"]


def test_killed_and_resumed_run_ends_bitwise_equal_to_a_straight_run(tmp_path, monkeypatch):
    spec = small_cnn(
        schedule={
            "lr": {"type": "cosine", "warmup_epochs": 0.5},
            "momentum": {"type": "sutskever"},
        },
    )
    run(spec, tmp_path / "straight")
    with monkeypatch.context() as patch:
        kill_after_epoch(patch, 1)
        with pytest.raises(SimulatedKill):
            run(spec, tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints", "last").info["state"]["epoch"] == 1
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "train_lo')  # a line torn by the kill
    run(spec, tmp_path / "resumed", resume=True)
    assert_same_checkpoint(
        tmp_path / "straight" / "checkpoints", tmp_path / "resumed" / "checkpoints"
    )
    metrics = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in metrics] == [1, 2]


def test_resume_can_extend_a_finished_run(tmp_path):
    spec = small_cnn()
    run(spec, tmp_path / "straight")
    run(spec, tmp_path / "extended", epochs=1)
    # Resuming from the run's own resolved spec.yaml works as well as from the original.
    resolved = load_spec(tmp_path / "extended" / "spec.yaml")
    options = TrainOptions(out=tmp_path / "extended", resume=True, epochs=2, progress=False)
    final = train(resolved, options, log=_drop)
    assert final["epochs"] == 2
    assert_same_checkpoint(
        tmp_path / "straight" / "checkpoints", tmp_path / "extended" / "checkpoints"
    )


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # From epoch 2 the lr is 1e11: the weights blow up within a few steps.
    spec = small_cnn(schedule={"lr": {"type": "multistep", "milestones": [1], "gamma": 1e12}})
    spec["normalize"] = None
    with pytest.raises(TrainingError) as caught:
        run(spec, tmp_path / "run")
    message = str(caught.value)
    assert "at step" in message and "(epoch 2," in message and "after epoch 1" in message
    assert "hint: lower optimizer.lr" in message
    step = int(message.split("at step ")[1].split()[0])
    assert 9 <= step < 18  # in epoch 2 (9 steps per epoch)
    kept = load_checkpoint(tmp_path / "run" / "checkpoints", "last")
    assert kept.info["state"]["epoch"] == 1
    assert all(torch.isfinite(v.float()).all() for v in kept.weights.values())


def test_cli_exit_codes_and_messages(tmp_path, capsys):
    spec_path = tmp_path / "tiny.yaml"
    spec = small_cnn(train={"epochs": 1, "batch_size": 256})
    spec_path.write_text(json.dumps(spec))
    out = tmp_path / "run"
    assert main(["train", str(spec_path), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1" in printed and "test accuracy" in printed

    assert main(["train", str(spec_path), "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["train", str(spec_path), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no checkpoint" in capsys.readouterr().err

    changed = ["--set", "network[0].conv.out=6"]
    assert main(["train", str(spec_path), "--out", str(out), "--resume", *changed]) == 2
    assert "the spec differs from the one" in capsys.readouterr().err

    np.savez(tmp_path / "many.npz", x=np.zeros((40, 1, 8, 8)), y=np.arange(40) % 20)
    args = [
        "train",
        str(spec_path),
        "--out",
        str(tmp_path / "x"),
        "--data",
        str(tmp_path / "many.npz"),
    ]
    assert main(args) == 2
    assert "has 20 classes but the model outputs 10" in capsys.readouterr().err

    assert main(["eval", str(out), "--json", "--split", "val", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["split"] == "val" and result["count"] == 179

    bad = small_cnn(schedule={"lr": {"type": "multistep", "milestones": [1], "gamma": 1e12}})
    bad["normalize"], bad["train"] = None, {"epochs": 2, "batch_size": 128}
    spec_path.write_text(json.dumps(bad))
    assert main(["train", str(spec_path), "--out", str(tmp_path / "nan")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the loss became") and "Traceback" not in err


def test_training_loss_adds_weighted_head_losses():
    torch.manual_seed(0)
    logits, aux1, aux2 = torch.randn(3, 4, 5).unbind(0)
    target = torch.tensor([0, 3, 1, 4])
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    got = training_loss(
        (logits, {"aux1": aux1, "aux2": aux2}), target, loss_fn, {"aux1": 0.3, "aux2": 0.5}
    )
    expected = sum(
        w * F.cross_entropy(t, target, label_smoothing=0.1)
        for w, t in ((1.0, logits), (0.3, aux1), (0.5, aux2))
    )
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert training_loss(logits, target, loss_fn, {}).item() == pytest.approx(
        F.cross_entropy(logits, target, label_smoothing=0.1).item(), rel=1e-6
    )


# The training sections recommended for specs/digits_cnn.yaml; the spec's own win where it has them.
DIGITS_TRAINING = {
    "optimizer": {
        "type": "sgd",
        "lr": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "no_decay": ["bias", "norm"],
    },
    "schedule": {"lr": {"type": "cosine", "warmup_epochs": 1}},
    "loss": {"label_smoothing": 0.1},
    "train": {"epochs": 12, "batch_size": 32},
}


@pytest.mark.slow
def test_digits_cnn_reaches_97_percent_test_accuracy(tmp_path):
    spec_file = Path(__file__).parents[2] / "specs" / "digits_cnn.yaml"
    data = yaml.safe_load(spec_file.read_text())
    for section, values in DIGITS_TRAINING.items():
        data.setdefault(section, values)
    final = train(load_spec(data), TrainOptions(out=tmp_path / "run", progress=False), log=_drop)
    assert final["test_accuracy"] >= 0.97


def test_training_only_heads_train_and_stay_out_of_evaluation(tmp_path):
    spec = small_cnn(train={"epochs": 1, "batch_size": 256})
    spec["network"][0]["id"] = "stem"
    spec["heads"] = [
        {
            "id": "aux",
            "from": "stem",
            "loss_weight": 0.3,
            "network": ["global_avg_pool", {"linear": {"out": 10}}],
        }
    ]
    initial = build_model(load_spec(spec), seed=0).state_dict()["aux.linear1.weight"]
    final = run(spec, tmp_path / "run")
    trained = load_checkpoint(tmp_path / "run" / "checkpoints", "last").weights
    # Only the head's own loss term reaches the head's weights.
    assert not torch.equal(trained["aux.linear1.weight"], initial)
    assert evaluate_run(tmp_path / "run", device="cpu")["accuracy"] == final["test_accuracy"]


def test_amp_on_cpu_trains_in_float32_with_a_note(tmp_path):
    lines = []
    spec = small_cnn(train={"epochs": 1, "batch_size": 256})
    options = TrainOptions(out=tmp_path / "run", progress=False, device="cpu", amp=True)
    train(load_spec(spec), options, log=lines.append)
    assert "note: --amp needs CUDA; training in float32" in lines
    weights = load_checkpoint(tmp_path / "run" / "checkpoints", "last").weights
    assert weights["linear1.weight"].dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp_dtype", ["bfloat16", "float16"])
def test_cuda_amp_channels_last_compile(tmp_path, amp_dtype):
    spec = small_cnn(train={"epochs": 2, "batch_size": 64, "amp_dtype": amp_dtype})
    options = {"device": "cuda", "amp": True, "channels_last": True, "compile": True}
    final = run(spec, tmp_path / "run", **options)
    assert final["device"].startswith("cuda") and final["test_accuracy"] > 0.3
    record = load_checkpoint(tmp_path / "run" / "checkpoints", "last")
    assert ("grad_scaler" in record.info) == (amp_dtype == "float16")
    assert all(torch.isfinite(v.float()).all() for v in record.weights.values())


def test_progress_bar_draws_on_a_terminal_only():
    import io

    from nnspec.runtime.train.progress import ProgressBar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    assert ProgressBar.wanted(stream) and not ProgressBar.wanted(io.StringIO())
    bar = ProgressBar(10, "epoch 1/2", enabled=True, stream=stream, min_interval=0)
    bar.update(3, "loss 0.5")
    # tqdm's line: the count, elapsed<remaining (the ETA), the rate, and the note.
    assert re.search(r"epoch 1/2: +30%\|.*\| 3/10 \[\d\d:\d\d<\d\d:\d\d, .*batch/s, loss 0.5\]",
                     stream.getvalue())
    bar.close()
    assert stream.getvalue().endswith("\r")  # the finished bar is cleared from the terminal
    silent = io.StringIO()
    ProgressBar(10, "x", enabled=False, stream=silent).update(5)
    assert silent.getvalue() == ""


def test_default_run_dirs_are_numbered_and_resume_takes_the_newest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = small_cnn(train={"epochs": 1, "batch_size": 256})
    run(spec, None)
    run(spec, None)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-2"]
    final = run(spec, None, resume=True, epochs=2)
    assert final["epochs"] == 2
    assert json.loads((tmp_path / "runs" / "tiny" / "final.json").read_text())["epochs"] == 1
