"""The kinds windowed attention is written with, each against torchvision's or torch's own code
for the same operation: window and grid partitions (MaxViT), the shifted-window attention of
Swin (roll, partition, mask, relative position bias, reverse), MaxViT's relative positional
attention, patch merging, the additive mask input (nn.MultiheadAttention's attn_mask), and
the `dim` of linear, layernorm and groupnorm."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import maxvit, swin_transformer
from torchvision.models.convnext import LayerNorm2d

from nnspec.compiler import build_model
from tests.compiler.fixtures import write_spec

GEN = torch.Generator().manual_seed(0)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


def spec(input_shape, network) -> dict:
    return {"nnspec": 1, "name": "t", "input": {"shape": list(input_shape)}, "network": network}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


@pytest.mark.parametrize("grid", [False, True])
def test_partitions_equal_maxvits_and_reverse_undoes_them(grid):
    x = randn(2, 5, 14, 14)  # torchvision's MaxViT partitions (B, C, H, W) directly
    if grid:  # a 7x7 grid: torchvision cuts 2x2 windows, then swaps groups and tokens
        expected = maxvit.SwapAxes(-2, -3)(maxvit.WindowPartition()(x, 2))
    else:
        expected = maxvit.WindowPartition()(x, 7)
    model = build_model(spec((14, 14, 5), [
        {"window_partition": {"size": 7, "grid": grid}, "id": "part"},
        {"window_reverse": {"size": 7, "grid": grid, "shape": [14, 14]}}])).eval()
    windows = model.part(channels_last(x))
    assert torch.equal(windows, expected)
    assert tuple(windows.shape[1:]) == model.graph.node("part").shape
    assert torch.equal(model(channels_last(x)), channels_last(x))


def test_window_partition_cuts_rectangles_row_major():
    x = torch.arange(4 * 6, dtype=torch.float32).view(1, 4, 6, 1)
    model = build_model(spec((4, 6, 1), [{"window_partition": {"size": [2, 3]}}]))
    windows = model(x)[0, :, :, 0]
    assert windows.tolist()[0] == [0, 1, 2, 6, 7, 8]      # the top-left 2x3 window
    assert windows.tolist()[3] == [15, 16, 17, 21, 22, 23]  # the bottom-right one


SWIN_ATTENTION = """
input: {shape: [14, 21, 16]}
vars: {shift: 3}
network:
  - layernorm:
    id: norm1
  - roll: {shifts: ["${-shift}", "${-shift}"], dims: [0, 1]}
    when: ${shift > 0}
  - window_partition: {size: 7}
    id: windows
  - shifted_window_mask: {size: 7, shift: $shift}
    from: norm1
    id: mask
    when: ${shift > 0}
  - self_attention: {heads: 2, position_bias: {window: 7}}
    from: "${['windows', 'mask'] if shift > 0 else 'windows'}"
    id: attn
  - window_reverse: {size: 7, shape: [14, 21]}
  - roll: {shifts: [$shift, $shift], dims: [0, 1]}
    when: ${shift > 0}
"""


@pytest.mark.parametrize("shift", [0, 3])
def test_swin_window_attention_equals_torchvisions(tmp_path, shift):
    reference = swin_transformer.ShiftedWindowAttention(16, [7, 7], [shift, shift], 2).eval()
    with torch.no_grad():
        reference.relative_position_bias_table.normal_(generator=GEN)
    model = build_model(write_spec(tmp_path, SWIN_ATTENTION), overrides=[f"vars.shift={shift}"])
    model.eval().load_state_dict({
        "norm1.weight": torch.ones(16), "norm1.bias": torch.zeros(16),
        "attn.in_proj_weight": reference.qkv.weight, "attn.in_proj_bias": reference.qkv.bias,
        "attn.out_proj.weight": reference.proj.weight, "attn.out_proj.bias": reference.proj.bias,
        "attn.relative_position_bias_table": reference.relative_position_bias_table,
    })
    x = randn(2, 14, 21, 16)
    with torch.no_grad():
        expected = reference(torch.nn.functional.layer_norm(x, (16,)))
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)
        # the mask matters: without it the shifted windows mix tokens from far apart
        if shift:
            unmasked = model.attn(model.windows(model.roll1(model.norm1(x))))
            assert not torch.allclose(unmasked, model.attn(
                model.windows(model.roll1(model.norm1(x))), model.mask(x)), atol=1e-3)


def test_swin_v2_cosine_attention_with_continuous_bias_equals_torchvisions(tmp_path):
    reference = swin_transformer.ShiftedWindowAttentionV2(16, [7, 7], [3, 3], 2).eval()
    with torch.no_grad():
        reference.cpb_mlp[0].weight.normal_(generator=GEN)
        reference.logit_scale.uniform_(1.0, 3.0, generator=GEN)
        reference.qkv.bias.normal_(generator=GEN)  # its key part is ignored, by both
    text = SWIN_ATTENTION.replace("position_bias: {window: 7}",
                                  "cosine: true, position_bias: {window: 7, mlp: 512}")
    model = build_model(write_spec(tmp_path, text), overrides=["init.attention=zeros"]).eval()
    assert torch.equal(model.attn.logit_scale, torch.log(10 * torch.ones(2, 1, 1)))  # untouched
    model.load_state_dict({
        "norm1.weight": torch.ones(16), "norm1.bias": torch.zeros(16),
        "attn.in_proj_weight": reference.qkv.weight, "attn.in_proj_bias": reference.qkv.bias,
        "attn.out_proj.weight": reference.proj.weight, "attn.out_proj.bias": reference.proj.bias,
        "attn.logit_scale": reference.logit_scale,
        **{f"attn.cpb_mlp.{k}": v for k, v in reference.cpb_mlp.state_dict().items()},
    })
    x = randn(2, 14, 21, 16)
    with torch.no_grad():
        expected = reference(torch.nn.functional.layer_norm(x, (16,)))
        torch.testing.assert_close(model(x), expected, atol=1e-5, rtol=0)


def test_maxvit_relative_attention_equals_torchvisions_with_its_scale():
    reference = maxvit.RelativePositionalMultiHeadAttention(64, 32, 49).eval()
    with torch.no_grad():
        reference.relative_position_bias_table.normal_(generator=GEN)
    model = build_model(spec((3, 49, 64), [{"self_attention": {
        "heads": 2, "scale": 64 ** -0.5, "position_bias": {"window": [7, 7]}}, "id": "attn"}]))
    model.eval().load_state_dict({
        "attn.in_proj_weight": reference.to_qkv.weight, "attn.in_proj_bias": reference.to_qkv.bias,
        "attn.out_proj.weight": reference.merge.weight, "attn.out_proj.bias": reference.merge.bias,
        "attn.relative_position_bias_table": reference.relative_position_bias_table,
    })
    x = randn(2, 3, 49, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)


def test_a_mask_input_is_added_to_the_logits_like_multihead_attentions_attn_mask():
    reference = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    mask = torch.zeros(5, 5).masked_fill(torch.rand(5, 5, generator=GEN) < 0.4, float("-inf"))
    mask.fill_diagonal_(0.0)
    model = build_model({
        "nnspec": 1, "name": "t",
        "inputs": {"tokens": {"shape": [5, 8]}, "mask": {"shape": [5, 5]}},
        "network": [{"self_attention": {"heads": 2}, "from": ["tokens", "mask"], "id": "attn"}],
    }).eval()
    model.attn.load_state_dict(reference.state_dict())
    x = randn(3, 5, 8)
    with torch.no_grad():
        expected = reference(x, x, x, attn_mask=mask, need_weights=False)[0]
        torch.testing.assert_close(model(x, mask.expand(3, 5, 5)), expected, atol=1e-6, rtol=0)


def test_merge_patches_equals_torchvisions_patch_merging_order_and_padding():
    x = randn(2, 7, 9, 3)
    model = build_model(spec((7, 9, 3), ["merge_patches"]))
    assert torch.equal(model(x), swin_transformer._patch_merging_pad(x))
    assert model.graph.output_shape == (4, 5, 12)


def test_linear_along_channels_is_a_1x1_convolution():
    model = build_model(spec((6, 4, 5), [{"linear": {"out": 3, "dim": 0}, "id": "fc"}])).eval()
    conv = torch.nn.Conv2d(6, 3, 1)
    conv.weight.data = model.fc.weight.data.view(3, 6, 1, 1)
    conv.bias.data = model.fc.bias.data
    x = randn(2, 6, 4, 5)
    torch.testing.assert_close(model(x), conv(x), atol=1e-6, rtol=0)
    assert tuple(model.state_dict()["fc.weight"].shape) == (3, 6)  # a Linear's weight


def test_channels_last_mlp_needs_no_reshape_and_a_map_needs_a_dim():
    model = build_model(spec((4, 5, 6), [{"linear": {"out": 12, "dim": -1}}, "gelu",
                                         {"linear": {"out": 6, "dim": -1}}]))
    assert model.graph.output_shape == (4, 5, 6)
    assert isinstance(model.linear1, torch.nn.Linear)  # the last dim: torch's own module


def test_layernorm_along_channels_equals_torchvisions_layernorm2d():
    model = build_model(spec((6, 4, 5), [{"layernorm": {"dim": 0, "eps": 1e-6}, "id": "ln"}]))
    reference = LayerNorm2d(6, eps=1e-6)
    with torch.no_grad():
        reference.weight.normal_(generator=GEN)
        reference.bias.normal_(generator=GEN)
    model.load_state_dict({"ln.weight": reference.weight, "ln.bias": reference.bias})
    x = randn(2, 6, 4, 5)
    torch.testing.assert_close(model(x), reference(x), atol=1e-6, rtol=0)


def test_groupnorm_on_channels_last_maps_equals_groupnorm_on_channels_first():
    model = build_model(spec((4, 5, 6), [{"groupnorm": {"groups": 3, "dim": -1}, "id": "gn"}]))
    reference = torch.nn.GroupNorm(3, 6)
    with torch.no_grad():
        reference.weight.normal_(generator=GEN)
    model.load_state_dict(reference.state_dict(prefix="gn."))
    x = randn(2, 4, 5, 6)
    expected = reference(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(model(x), expected, atol=1e-6, rtol=0)


def test_relative_position_index_is_recomputed_not_stored():
    model = build_model(spec((4, 9, 8), [{"self_attention": {
        "heads": 2, "position_bias": {"window": 3}}, "id": "attn"}]))
    reference = swin_transformer.ShiftedWindowAttention(8, [3, 3], [0, 0], 2)
    assert torch.equal(model.attn.relative_position_index.flatten(),
                       reference.relative_position_index)
    assert set(model.state_dict()) == {"attn.in_proj_weight", "attn.in_proj_bias",
                                       "attn.relative_position_bias_table",
                                       "attn.out_proj.weight", "attn.out_proj.bias"}
