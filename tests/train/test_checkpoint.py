"""Checkpoints: exact round trips, and a crash at any point of a save leaves a whole one."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from nnspec.compiler.errors import DataError
from nnspec.runtime.train import checkpoint as ckpt
from nnspec.runtime.train.checkpoint import load_checkpoint, restore_rng, save_checkpoint


class SimulatedCrash(BaseException):
    """Raised where the process would have been killed."""


def trained_pair(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(8, 3)).square().mean().backward()
        optimizer.step()
    return model, optimizer


def test_round_trip_restores_weights_optimizer_rng_and_info(tmp_path):
    model, optimizer = trained_pair(0)
    torch.manual_seed(123)
    save_checkpoint(tmp_path, "last", model, optimizer, {"step": 2, "note": "x"})
    expected_draw = torch.rand(5)

    fresh, fresh_opt = trained_pair(1)
    loaded = load_checkpoint(tmp_path, "last")
    fresh.load_state_dict(loaded.weights)
    fresh_opt.load_state_dict(loaded.optimizer_state)
    restore_rng(loaded.rng)

    assert loaded.info == {"step": 2, "note": "x"}
    assert torch.equal(torch.rand(5), expected_draw)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    ours, theirs = fresh_opt.state_dict()["state"], optimizer.state_dict()["state"]
    assert ours.keys() == theirs.keys()
    for index in theirs:
        for name, value in theirs[index].items():
            assert torch.equal(ours[index][name], value), (index, name)
    # The weights file is a plain safetensors state_dict anyone can load.
    assert load_file(tmp_path / "last.safetensors").keys() == model.state_dict().keys()


def crash_on_call(monkeypatch, target, name: str, call: int) -> None:
    """Make `target.name` raise SimulatedCrash on its `call`-th use; a file writer first
    leaves a torn file behind, as a kill in the middle of a write would."""
    real = getattr(target, name)
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            if name == "save_file":
                with open(args[1], "wb") as handle:
                    handle.write(b"\x00" * 17)
            raise SimulatedCrash
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)


@pytest.mark.parametrize(
    ("target", "name", "call", "survivor"),
    [
        # save_file: 1 = weights, 2 = optimizer/RNG state
        (ckpt, "save_file", 1, "old"),
        (ckpt, "save_file", 2, "old"),
        # os.replace: 1 = the JSON record (the commit), 2 and 3 = the tensor files
        (os, "replace", 1, "old"),
        (os, "replace", 2, "new"),
        (os, "replace", 3, "new"),
    ],
)
def test_a_crash_during_save_leaves_a_whole_checkpoint(
    tmp_path, monkeypatch, target, name, call, survivor
):
    old_model, old_opt = trained_pair(0)
    new_model, new_opt = trained_pair(1)
    save_checkpoint(tmp_path, "last", old_model, old_opt, {"step": 1})
    crash_on_call(monkeypatch, target, name, call)
    with pytest.raises(SimulatedCrash):
        save_checkpoint(tmp_path, "last", new_model, new_opt, {"step": 2})
    monkeypatch.undo()

    loaded = load_checkpoint(tmp_path, "last")
    model, optimizer = (old_model, old_opt) if survivor == "old" else (new_model, new_opt)
    assert loaded.info == {"step": 1 if survivor == "old" else 2}
    assert torch.equal(loaded.weights["0.weight"], model.state_dict()["0.weight"])
    assert torch.equal(
        loaded.optimizer_state["state"][0]["exp_avg"],
        optimizer.state_dict()["state"][0]["exp_avg"],
    )
    # The next save works over whatever the crash left.
    save_checkpoint(tmp_path, "last", new_model, new_opt, {"step": 3})
    assert load_checkpoint(tmp_path, "last").info == {"step": 3}


def test_files_from_different_saves_are_refused(tmp_path):
    model, optimizer = trained_pair(0)
    save_checkpoint(tmp_path / "a", "last", model, optimizer, {})
    save_checkpoint(tmp_path / "b", "last", model, optimizer, {})
    os.replace(tmp_path / "b" / "last.safetensors", tmp_path / "a" / "last.safetensors")
    with pytest.raises(DataError, match="inconsistent"):
        load_checkpoint(tmp_path / "a", "last")


def test_missing_checkpoint_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no checkpoint 'best'"):
        load_checkpoint(tmp_path, "best")


def test_checkpoint_is_safetensors_and_json_only(tmp_path):
    model, optimizer = trained_pair(0)
    save_checkpoint(tmp_path, "last", model, optimizer, {"step": 3})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last.json",
        "last.safetensors",
        "last.state.safetensors",
    ]
    record = json.loads((tmp_path / "last.json").read_text())
    assert record["info"] == {"step": 3}
    assert record["optimizer"]["param_groups"][0]["lr"] == 0.01
