"""`nnspec import-weights` for any spec and any state_dict: timm's training checkpoints and
safetensors files, torchvision models the spec was not written for (ConvNeXt, whose layer
scale comes first in its blocks), DDP and Lightning prefixes, `--exclude`; and refusals of
what names and shapes cannot settle. References are timm's and torchvision's own forward
passes; every model is small and random (nothing downloads)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from nnspec.compiler import build_model, load_spec
from nnspec.compiler.errors import DataError
from nnspec.runtime.cli import main
from nnspec.runtime.export.exporter import load_weights
from nnspec.runtime.train.weight_mapping import match_weights
from nnspec.runtime.train.weights import import_weights
from tests.compiler.fixtures import write_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
SMALL_VIT = ["input.shape=[3, 32, 32]", "vars.patch=8", "vars.layers=2", "vars.heads=2",
             "vars.hidden=16", "vars.mlp=32"]


def timm_vit(seed: int, classes: int = 1000) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = VisionTransformer(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2,
                              mlp_ratio=2.0, num_classes=classes)
    with torch.no_grad():  # timm starts the head and the tokens near zero
        for param in model.parameters():
            param.normal_(0, 0.3)
    return model.eval()


def vit_spec(name: str = "vit_b_16"):
    return load_spec(SPECS / "vit_b_16.yaml", overrides=[*SMALL_VIT, f"name={name}"])


def imported_model(spec, weights: Path) -> torch.nn.Module:
    model = build_model(spec).eval()
    load_weights(model, weights)
    return model


def assert_same_outputs(reference, model, size: int = 32) -> None:
    raw = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference((raw - MEAN) / STD)
        torch.testing.assert_close(model(raw), expected, atol=1e-5, rtol=0)
    assert expected.std() > 0.1


def test_timm_training_checkpoint_maps_by_structure_onto_the_vit_spec(tmp_path, capsys):
    trained, averaged = timm_vit(0), timm_vit(1)
    checkpoint = {"epoch": 3, "arch": "vit_tiny", "state_dict": trained.state_dict(),
                  "state_dict_ema": averaged.state_dict(), "args": argparse.Namespace(lr=0.1)}
    torch.save(checkpoint, tmp_path / "checkpoint.pth.tar")
    spec = SPECS / "vit_b_16.yaml"
    args = ["import-weights", str(spec), str(tmp_path / "checkpoint.pth.tar"),
            "-o", str(tmp_path / "vit.safetensors"), "--set", "name=my_vit"]
    for item in SMALL_VIT:
        args += ["--set", item]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "class_token.token" in out and "cls_token" in out  # the mapping table
    assert "its 'state_dict_ema' entry" in out and "30 by structure, 2 by name" in out
    # timm evaluates its moving average by default, and so does the import
    assert_same_outputs(averaged, imported_model(vit_spec("my_vit"), tmp_path / "vit.safetensors"))


def test_a_safetensors_file_keeps_no_order_so_names_are_needed(tmp_path):
    reference = timm_vit(0)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(DataError, match="safetensors files do not keep the order"):
        import_weights(vit_spec(), tmp_path / "model.safetensors", tmp_path / "x.safetensors")
    result = import_weights(vit_spec(), tmp_path / "model.safetensors",
                            tmp_path / "vit.safetensors", family="timm_vit")
    assert result.counts == {"rule": 30, "name": 2}
    assert_same_outputs(reference, imported_model(vit_spec(), tmp_path / "vit.safetensors"))


CONVNEXT = """
input: {shape: [3, 32, 32]}
normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}
blocks:
  cn_block:                 # depthwise 7x7, LayerNorm, MLP x4 over channels, layer scale
    residual:
      body:
        - conv: {out: $in_channels, kernel: 7, padding: 3, groups: $in_channels}
          id: dwconv
        - layernorm: {dim: 0, eps: 1.0e-6}
          id: norm
        - linear: {out: "${in_channels * 4}", dim: 0}
          id: fc1
        - gelu
        - linear: {out: $in_channels, dim: 0}
          id: fc2
        - scale: {value: 1.0e-6, learnable: true}
          id: layer_scale
      shortcut: identity
network:
  - conv: {out: 8, kernel: 4, stride: 4}
    id: stem
  - layernorm: {dim: 0, eps: 1.0e-6}
  - cn_block
  - layernorm: {dim: 0, eps: 1.0e-6}
  - conv: {out: 16, kernel: 2, stride: 2}
  - cn_block
  - global_avg_pool: {keep_dims: true}
  - layernorm: {dim: 0, eps: 1.0e-6}
  - flatten
  - linear: {out: 5}
"""


def test_torchvision_convnext_maps_onto_a_channels_first_spec_written_for_it(tmp_path):
    torch.manual_seed(0)
    reference = ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=5)
    with torch.no_grad():  # O(1) weights: torchvision starts the layer scale at 1e-6
        for param in reference.parameters():
            param.normal_(0, 0.5)
    torch.save(reference.state_dict(), tmp_path / "convnext.pth")
    spec = write_spec(tmp_path, CONVNEXT)
    result = import_weights(spec, tmp_path / "convnext.pth", tmp_path / "convnext.safetensors")
    pairs = {p.target: p.source for p in result.pairs}
    # torchvision registers the layer scale before the block it scales; the spec after it
    assert pairs["cn_block1.layer_scale.weight"] == "features.1.0.layer_scale"
    assert pairs["cn_block2.fc1.weight"] == "features.3.0.block.3.weight"
    assert_same_outputs(reference.eval(), imported_model(spec, tmp_path / "convnext.safetensors"))


@pytest.mark.parametrize("prefix", ["module.", "model.", "_orig_mod.module."])
def test_wrapper_prefixes_of_ddp_lightning_and_compile_are_removed(tmp_path, prefix):
    reference = timm_vit(0)
    wrapped = {f"{prefix}{k}": v for k, v in reference.state_dict().items()}
    torch.save({"state_dict": wrapped, "global_step": 10}, tmp_path / "wrapped.ckpt")
    import_weights(vit_spec(), tmp_path / "wrapped.ckpt", tmp_path / "vit.safetensors")
    assert_same_outputs(reference, imported_model(vit_spec(), tmp_path / "vit.safetensors"))


def test_exclude_keeps_a_new_head_as_the_spec_initialises_it(tmp_path, capsys):
    torch.save(timm_vit(0, classes=10).state_dict(), tmp_path / "ten_classes.pth")
    args = ["import-weights", str(SPECS / "vit_b_16.yaml"), str(tmp_path / "ten_classes.pth"),
            "-o", str(tmp_path / "vit.safetensors")]
    for item in SMALL_VIT:
        args += ["--set", item]
    assert main(args) == 2  # the 10-class head does not fit the 1000-class spec
    assert "'head.weight' has shape [10, 16], spec 'head.weight' has [1000, 16]" in \
        capsys.readouterr().err
    assert main([*args, "--exclude", r"^head\."]) == 0
    assert "2 spec tensors excluded, initialised as the spec says" in capsys.readouterr().out
    written = load_file(str(tmp_path / "vit.safetensors"))
    initialised = build_model(vit_spec()).state_dict()
    torch.testing.assert_close(written["head.weight"], initialised["head.weight"])
    torch.testing.assert_close(written["class_token.token"],
                               timm_vit(0, classes=10).state_dict()["cls_token"])


def test_tensors_that_shapes_cannot_tell_apart_are_refused_not_guessed(tmp_path):
    spec = {"nnspec": 1, "name": "two", "input": {"shape": [4]},
            "network": [{"linear": {"out": 4}}, {"linear": {"out": 4}}]}
    source = {"a.weight": torch.zeros(4, 4), "a.bias": torch.zeros(4),
              "b.weight": torch.zeros(4, 4), "b.bias": torch.zeros(4),
              "c.weight": torch.zeros(4, 4), "c.bias": torch.zeros(4)}
    torch.save(source, tmp_path / "three.pth")
    with pytest.raises(DataError, match=r"cannot tell which of 3 source tensors of shape \[4, 4\]"):
        import_weights(spec, tmp_path / "three.pth", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_structure_that_would_split_a_module_is_refused():
    target = {"fc.weight": torch.zeros(4, 4), "fc.bias": torch.zeros(4),
              "norm.weight": torch.zeros(4), "norm.bias": torch.zeros(4)}
    # one source module holds both layers' tensors, the norm's registered first
    source = {"m.norm_weight": torch.zeros(4), "m.norm_bias": torch.zeros(4),
              "m.fc_weight": torch.zeros(4, 4), "m.fc_bias": torch.zeros(4)}
    mapping = match_weights(source, target)
    assert any("would split source module 'm'" in p for p in mapping.problems)
    assert not any(p.target == "fc.bias" for p in mapping.pairs)


def test_a_recomputed_buffer_is_checked_against_the_spec_not_copied():
    index = torch.arange(4).view(2, 2)
    target = {"attn.table": torch.zeros(3, 2)}
    buffers = {"attn.index": index}
    same = match_weights({"attn.table": torch.ones(3, 2), "attn.index": index.flatten()},
                         target, buffers=buffers)
    assert same.ok and [p.source for p in same.recomputed] == ["attn.index"]
    other = match_weights({"attn.table": torch.ones(3, 2), "attn.index": index.flip(0)},
                          target, buffers=buffers)
    assert any("differs from the spec's 'attn.index'" in p for p in other.problems)


def test_a_file_without_a_state_dict_is_refused_with_a_hint(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(DataError, match="expected a state_dict"):
        import_weights(vit_spec(), tmp_path / "meta.pth", tmp_path / "x.safetensors")
