"""Every layer kind: the inferred per-sample shape equals what its module really produces."""

from __future__ import annotations

import pytest
import torch

from nnspec.compiler import SpecError, build_model
from nnspec.compiler.layers import all_kinds

IMG = {"shape": [4, 9, 9]}
SEQ = {"shape": [6, 8]}      # (tokens, features)
VEC = {"shape": [12]}
MAP = {"shape": [4, 6, 8]}   # channels-last (H, W, C)
SIG = {"shape": [3, 20]}     # (channels, length)

CASES = [
    ("conv", IMG, [{"conv": {"out": 6, "kernel": 3, "stride": 2, "dilation": 2, "padding": 1}}]),
    ("conv", IMG, [{"conv": {"out": 8, "kernel": [3, 1], "padding": "same", "groups": 4}}]),
    ("conv", SIG, [{"conv": {"out": 5, "kernel": 4, "padding": "valid"}}]),
    ("conv_transpose", IMG, [{"conv_transpose": {"out": 3, "kernel": 3, "stride": 2,
                                                 "padding": 1, "output_padding": 1}}]),
    ("upsample", IMG, [{"upsample": {"scale": 2, "mode": "bilinear", "align_corners": False}}]),
    ("upsample", IMG, [{"upsample": {"size": [5, 7]}}]),
    ("linear", SEQ, [{"linear": {"out": 3}}]),
    ("batchnorm", SIG, ["batchnorm"]),
    ("batchnorm", VEC, ["batchnorm"]),
    ("layernorm", IMG, [{"layernorm": {"dims": 3}}]),
    ("groupnorm", IMG, [{"groupnorm": {"groups": 2}}]),
    ("dropout", IMG, [{"dropout": {"p": 0.5, "channel": True}}]),
    ("dropout", SIG, [{"dropout": {"p": 0.5, "channel": True}}]),
    ("stochastic_depth", IMG, [{"stochastic_depth": {"p": 0.2}}]),
    ("local_response_norm", IMG, [{"local_response_norm": {"size": 3}}]),
    ("normalize", IMG, [{"normalize": {"mean": [0, 1, 2, 3], "std": [1, 2, 3, 4]}}]),
    ("maxpool", IMG, [{"maxpool": {"kernel": 3, "stride": 2, "ceil_mode": True}}]),
    ("maxpool", SIG, [{"maxpool": {"kernel": 2, "padding": 1, "dilation": 2}}]),
    ("avgpool", IMG, [{"avgpool": {"kernel": 2, "stride": 1, "padding": 1,
                                   "count_include_pad": False}}]),
    ("adaptive_avg_pool", IMG, [{"adaptive_avg_pool": {"size": [2, 3]}}]),
    ("adaptive_max_pool", SIG, [{"adaptive_max_pool": {"size": 4}}]),
    ("global_avg_pool", IMG, [{"global_avg_pool": {"keep_dims": True}}]),
    ("global_max_pool", SIG, ["global_max_pool"]),
    ("flatten", IMG, [{"flatten": {"start": 1}}]),
    ("reshape", IMG, [{"reshape": {"shape": [4, -1]}}]),
    ("permute", IMG, [{"permute": {"dims": [1, 2, 0]}}]),
    ("select", SEQ, [{"select": {"dim": 0, "index": -1}}]),
    ("mean", SEQ, [{"mean": {"dims": [0]}}]),
    ("slice", IMG, [{"slice": {"dim": 0, "start": 1, "end": -1}}]),
    ("slice", SEQ, [{"slice": {"dim": -1, "start": 4}}]),
    ("scale", IMG, [{"scale": {"value": 0.5, "learnable": True}}]),
    ("scale", SEQ, [{"scale": {"value": 2.0}}]),
    ("softmax", SEQ, [{"softmax": {"dim": 0}}]),
    ("embedding", {"shape": [7], "dtype": "int64"}, [{"embedding": {"num": 20, "dim": 5}}]),
    ("lstm", SEQ, [{"lstm": {"hidden": 5, "layers": 2, "bidirectional": True}}]),
    ("lstm", SEQ, [{"lstm": {"hidden": 5, "output": "last"}}]),
    ("gru", SEQ, [{"gru": {"hidden": 3, "bidirectional": True, "output": "last"}}]),
    ("self_attention", SEQ, [{"self_attention": {"heads": 2}}]),
    ("self_attention", MAP, [{"window_partition": {"size": 2}},
                             {"self_attention": {"heads": 2, "position_bias": {"window": 2},
                                                 "scale": 0.3}}]),
    ("self_attention", MAP, [{"window_partition": {"size": 2}},
                             {"self_attention": {"heads": 2, "cosine": True,
                                                 "position_bias": {"window": 2, "mlp": 8}}}]),
    ("self_attention", MAP, [{"shifted_window_mask": {"size": 2, "shift": 1}, "id": "mask"},
                             {"window_partition": {"size": 2}, "from": "input", "id": "windows"},
                             {"self_attention": {"heads": 1}, "from": ["windows", "mask"]}]),
    ("linear", MAP, [{"linear": {"out": 3, "dim": -1}}]),
    ("linear", IMG, [{"linear": {"out": 3, "dim": 0}}]),
    ("layernorm", IMG, [{"layernorm": {"dim": 0}}]),
    ("groupnorm", MAP, [{"groupnorm": {"groups": 2, "dim": -1}}]),
    ("roll", MAP, [{"roll": {"shifts": [-1, 2], "dims": [0, 1]}}]),
    ("window_partition", MAP, [{"window_partition": {"size": [2, 3]}}]),
    ("window_partition", MAP, [{"window_partition": {"size": 2, "grid": True}}]),
    ("window_reverse", MAP, [{"window_partition": {"size": [2, 3], "grid": True}},
                             {"window_reverse": {"size": [2, 3], "grid": True, "shape": [4, 6]}}]),
    ("shifted_window_mask", MAP, [{"shifted_window_mask": {"size": 2, "shift": 1}}]),
    ("merge_patches", {"shape": [5, 6, 4]}, ["merge_patches"]),
    ("patch_embed", {"shape": [3, 8, 8]}, [{"patch_embed": {"size": 4, "dim": 6}}]),
    ("class_token", SEQ, ["class_token"]),
    ("position_embedding", SEQ, ["position_embedding"]),
    ("identity", VEC, ["identity"]),
    ("add", VEC, [{"linear": {"out": 12}, "id": "a"}, {"add": {}, "from": ["input", "a"]}]),
    ("multiply", IMG, [{"global_avg_pool": {"keep_dims": True}, "id": "g"},
                       {"multiply": {}, "from": ["input", "g"]}]),
    ("concat", SEQ, [{"linear": {"out": 3}, "id": "a"}, {"concat": {"dim": 1},
                                                          "from": ["input", "a"]}]),
]
CASES += [(k, VEC, [k]) for k in ("relu", "relu6", "silu", "sigmoid", "tanh", "hardswish",
                                  "hardsigmoid", "gelu", "leaky_relu")]


@pytest.mark.parametrize(("kind", "input_spec", "network"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_inferred_shape_equals_forward_shape(kind, input_spec, network):
    model = build_model({"nnspec": 1, "name": "t", "input": input_spec, "network": network})
    node = model.graph.nodes[-1]
    assert node.kind == kind
    if input_spec.get("dtype") == "int64":
        x = torch.randint(0, 20, (2, *input_spec["shape"]))
    else:
        x = torch.randn(2, *input_spec["shape"])
    out = model.eval()(x)
    assert tuple(out.shape) == (2, *node.shape)


def test_every_registered_kind_is_covered():
    assert {c[0] for c in CASES} == set(all_kinds())


@pytest.mark.parametrize(("input_spec", "layer", "message"), [
    (VEC, {"self_attention": {"heads": 2}}, "self_attention expects tokens .* rank 2 or more"),
    (SEQ, {"self_attention": {"heads": 2, "position_bias": {"window": 3}}},
     "window 3x3 has 9 tokens, the input has 6"),
    (MAP, {"window_partition": {"size": 4}}, r"map \(4, 6\) is not divisible into windows"),
    (MAP, {"shifted_window_mask": {"size": 2, "shift": 2}}, "must be smaller than the window"),
    (IMG, {"linear": {"out": 2}}, "`dim: -1` for channels-last maps"),
    (IMG, {"layernorm": {"dim": 0, "dims": 2}}, "not both"),
    (SEQ, {"self_attention": {"heads": 2, "cosine": True, "scale": 0.5}}, "learns its scale"),
    (SEQ, {"self_attention": {"heads": 3}}, "dim 8 is not divisible by heads=3"),
    (IMG, {"patch_embed": {"size": 4, "dim": 8}}, "not divisible into 4x4 patches"),
    (IMG, {"conv": {"out": 6, "kernel": 3, "groups": 3}}, "groups=3 must divide"),
    (IMG, {"conv": {"out": 6, "kernel": 3, "stride": 2, "padding": "same"}}, "needs stride 1"),
    (IMG, {"maxpool": {"kernel": 12}}, "does not fit an input of length 9"),
    (IMG, {"reshape": {"shape": [7, -1]}}, "cannot reshape"),
    (SEQ, {"select": {"dim": 0, "index": 6}}, "index 6 is out of range"),
    ({"shape": [5], "dtype": "int64"}, {"linear": {"out": 2}}, "start with an embedding"),
])
def test_shape_errors_are_worded_for_people(input_spec, layer, message):
    with pytest.raises(SpecError, match=message):
        build_model({"nnspec": 1, "name": "t", "input": input_spec, "network": [layer]})


def test_stochastic_depth_drops_whole_samples_in_training_only():
    model = build_model({"nnspec": 1, "name": "t", "input": {"shape": [3, 4]},
                         "network": [{"stochastic_depth": {"p": 0.5}}]})
    x = torch.ones(400, 3, 4)
    torch.manual_seed(0)
    out = model.train()(x)
    per_sample = out.flatten(1)
    # each sample is either dropped entirely or kept and scaled by 1 / (1 - p)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert bool((per_sample == per_sample[:, :1]).all())
    kept = (per_sample[:, 0] == 2.0).float().mean().item()
    assert 0.4 < kept < 0.6
    torch.testing.assert_close(model.eval()(x), x)
