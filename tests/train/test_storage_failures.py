"""Every I/O failure during training ends in one message and exit 1, and the last good
checkpoint is left intact: a full disk mid-save, a record that cannot be read."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import SafetensorError

from nnspec.compiler import DataError, UsageError
from nnspec.runtime.cli import main
from nnspec.runtime.train import checkpoint
from nnspec.runtime.train.checkpoint import load_checkpoint, save_checkpoint
from nnspec.runtime.train.run_dir import read_json

DISK_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def fail_writes_after(monkeypatch, successful: int) -> None:
    """safetensors' writer succeeds `successful` times, then the disk is full."""
    real = checkpoint.save_file
    calls = []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) > successful:
            with open(filename, "wb") as handle:
                handle.write(b"\0" * 16)  # part of the file made it
            raise SafetensorError(DISK_FULL)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(checkpoint, "save_file", save_file)


def test_a_failed_save_keeps_the_previous_checkpoint_and_leaves_no_partial_files(
        tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    save_checkpoint(tmp_path, "last", model, None, {"epoch": 1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    fail_writes_after(monkeypatch, successful=1)  # the weights file, not the state file
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, "last", model, None, {"epoch": 2})
    assert (info.value.errno, info.value.strerror) == (28, "No space left on device")
    assert info.value.filename == str(tmp_path / "last.state.safetensors.new")
    kept = load_checkpoint(tmp_path, "last")
    assert kept.info == {"epoch": 1}
    assert all(torch.equal(kept.weights[k], before[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.json", "last.safetensors", "last.state.safetensors"]


def test_a_full_disk_during_training_is_one_message_exit_1_and_resumable(
        tmp_path, monkeypatch, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(json.dumps({
        "nnspec": 1, "name": "tiny", "input": {"shape": [1, 8, 8]},
        "network": ["flatten", {"linear": {"out": 10}}],
        "optimizer": {"type": "sgd", "lr": 0.1}, "train": {"epochs": 2, "batch_size": 512},
    }))
    out = tmp_path / "run"
    fail_writes_after(monkeypatch, successful=4)  # epoch 1: best and last, two files each
    assert main(["train", str(spec), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training stopped: No space left on device: ")
    assert err.endswith(f"the last good checkpoint in {out / 'checkpoints'} is intact; fix the "
                        "cause and continue with --resume\n")
    assert err.count("\n") == 2 and "Traceback" not in err
    assert load_checkpoint(out / "checkpoints", "last").info["state"]["epoch"] == 1

    monkeypatch.undo()  # space freed
    assert main(["train", str(spec), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert load_checkpoint(out / "checkpoints", "last").info["state"]["epoch"] == 2


def test_unreadable_run_records_are_errors_not_tracebacks(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(UsageError, match="run.json cannot be read: Expecting property name"):
        read_json(tmp_path / "run.json")
    (tmp_path / "last.json").write_text("[]")
    with pytest.raises(DataError, match="checkpoint record .*last.json cannot be read"):
        load_checkpoint(tmp_path, "last")


def test_running_out_of_memory_is_one_message_with_a_hint(tmp_path, monkeypatch, capsys):
    from nnspec.compiler.build import CompiledModel

    def forward(self, *args, **kwargs):  # what the CPU allocator raises for a too-large batch
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 1843200000000 bytes.")

    monkeypatch.setattr(CompiledModel, "forward", forward)
    spec = tmp_path / "tiny.yaml"
    spec.write_text("nnspec: 1\nname: tiny\ninput: {shape: [1, 8, 8]}\n"
                    "network: [flatten, {linear: {out: 10}}]\ntrain: {epochs: 1}\n")
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: training stopped: out of memory ([enforce fail at "
                          "alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate")
    assert "no checkpoint had been written yet" in err
    assert "hint: lower train.batch_size or the model's size" in err
    assert "Traceback" not in err
