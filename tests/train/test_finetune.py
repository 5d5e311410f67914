"""Fine-tuning pieces on their own: `--init-from` matching and reading, and `train.freeze`."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from nnspec.compiler import DataError, SpecError, build_model, load_spec
from nnspec.compiler.training_schema import FreezeConfig, OptimizerConfig
from nnspec.runtime.train.finetune import init_from_weights, match_weights, read_weights
from nnspec.runtime.train.freeze import Freezer
from nnspec.runtime.train.optim import build_optimizer


def tiny_spec(classes: int = 10, name: str = "tiny") -> dict:
    return {
        "nnspec": 1,
        "name": name,
        "input": {"shape": [1, 8, 8]},
        "network": [
            {"conv": {"out": 4, "kernel": 3, "padding": 1, "bias": False}, "id": "stem"},
            {"batchnorm": {}, "id": "bn"},
            "relu",
            "global_avg_pool",
            {"linear": {"out": classes}, "id": "head"},
        ],
    }


def tiny(classes: int = 10, seed: int = 0):
    return build_model(load_spec(tiny_spec(classes)), seed=seed)


def test_matching_by_id_and_shape_sorts_every_tensor_into_one_category():
    target = {"a": torch.zeros(2), "b": torch.zeros(3, 4), "c": torch.zeros(1)}
    source = {"a": torch.ones(2), "b": torch.ones(5, 4), "z": torch.ones(7)}
    loaded, report = match_weights(target, source, "src")
    assert list(loaded) == ["a"] and torch.equal(loaded["a"], torch.ones(2))
    assert report.loaded == ("a",)
    assert report.shape_skipped == (("b", (5, 4), (3, 4)),)
    assert report.missing == ("c",) and report.unexpected == ("z",)
    assert not report.exact
    text = "\n".join(report.lines())
    assert "loaded 1 tensors" in text and "b [5, 4] -> [3, 4]" in text and "z" in text


def test_a_new_head_is_skipped_and_keeps_its_init_while_the_backbone_loads(tmp_path):
    source, target = tiny(10, seed=1), tiny(5, seed=2)
    head_before = target.head.weight.detach().clone()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))

    report = init_from_weights(target, path)

    assert torch.equal(target.stem.weight, source.stem.weight)
    assert torch.equal(target.bn.running_var, source.bn.running_var)
    assert torch.equal(target.head.weight, head_before)
    assert {k for k, *_ in report.shape_skipped} == {"head.weight", "head.bias"}
    assert report.missing == () and report.unexpected == ()
    with pytest.raises(DataError) as caught:
        init_from_weights(tiny(5), path, strict=True)
    assert "--strict" in str(caught.value) and "head.weight [10, 4] -> [5, 4]" in str(caught.value)


def test_a_pth_state_dict_saved_from_ddp_loads_without_its_module_prefix(tmp_path):
    source = tiny(10, seed=3)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = tiny(10, seed=4)
    report = init_from_weights(target, path, strict=True)
    assert report.exact and torch.equal(target.head.weight, source.head.weight)


def test_unreadable_or_unfitting_sources_are_data_errors_with_a_hint(tmp_path):
    with pytest.raises(DataError, match="no such file or run directory"):
        read_weights(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="not a safetensors file"):
        read_weights(tmp_path / "junk.safetensors")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="not a run directory"):
        read_weights(tmp_path / "empty_dir")
    save_file({"features.0.weight": torch.zeros(4, 1, 3, 3)}, str(tmp_path / "tv.safetensors"))
    with pytest.raises(DataError, match="nnspec import-weights"):
        init_from_weights(tiny(), tmp_path / "tv.safetensors")


def test_frozen_parameters_do_not_move_and_their_batch_norm_stays_in_eval_mode():
    torch.manual_seed(0)
    model = tiny()
    config = OptimizerConfig(type="sgd", lr=0.1, momentum=0.9, weight_decay=0.1)
    optimizer = build_optimizer(model, config)  # built before freezing: one layout throughout
    freezer = Freezer(model, FreezeConfig(params=["stem", "bn"], unfreeze_at_epoch=2))
    assert freezer.names == ["stem.weight", "bn.weight", "bn.bias"]
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))

    def one_step(epoch: int) -> dict:
        freezer.apply(epoch)
        model.train()
        freezer.set_norms_mode(epoch)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        return {k: not torch.equal(v, before[k]) for k, v in model.state_dict().items()}

    moved = one_step(1)
    assert not model.bn.training
    assert not any(moved[k] for k in ("stem.weight", "bn.weight", "bn.bias", "bn.running_mean"))
    assert moved["head.weight"] and moved["head.bias"]
    moved = one_step(2)  # unfrozen from epoch 2: everything trains, batch norm statistics too
    assert model.bn.training and all(moved[k] for k in ("stem.weight", "bn.running_mean"))


def test_freeze_patterns_are_checked_against_the_model():
    with pytest.raises(SpecError) as caught:
        Freezer(tiny(), FreezeConfig(params=["stme", "bn"]))
    message = str(caught.value)
    assert "train.freeze.params[0]" in message and "did you mean 'stem'" in message
    with pytest.raises(SpecError, match="nothing would train"):
        Freezer(tiny(), FreezeConfig(params=["*"]))


def test_import_weights_output_fine_tunes_into_a_new_head(tmp_path):
    tv = pytest.importorskip("torchvision")  # a test dependency; CI installs it
    from nnspec.runtime.train.weights import import_torchvision_weights

    reference = tv.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    imported = import_torchvision_weights(
        load_spec("resnet18"), tmp_path / "r18.pth", tmp_path / "r18.safetensors"
    )
    model = build_model(load_spec("resnet18", overrides=["network[-1].linear.out=5"]))
    report = init_from_weights(model, imported.path)
    assert {k for k, *_ in report.shape_skipped} == {"fc.weight", "fc.bias"}
    assert report.missing == () and report.unexpected == ()
    assert len(report.loaded) == len(reference.state_dict()) - 2
    torch.testing.assert_close(model.layer3.block2.conv2.weight, reference.layer3[1].conv2.weight)
    torch.testing.assert_close(model.layer4.block1.shortcut.batchnorm1.running_var,
                               reference.layer4[0].downsample[1].running_var)
