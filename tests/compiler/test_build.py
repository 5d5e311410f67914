"""Build: parameter counts by hand, resolve round trip, plugins, reserved names."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from nnspec.compiler import SpecError, UsageError, build_model, compile_graph, load_plugins
from nnspec.compiler.resolve import resolve_text
from nnspec.compiler.summary import summarize
from tests.compiler.fixtures import write_spec


def test_digits_cnn_parameter_count_by_hand():
    model = build_model("digits_cnn")
    conv = 1 * 32 * 9 + 32 * 64 * 9 + 64 * 64 * 9  # three 3x3 convs without bias
    bn = 2 * (32 + 64 + 64)                         # gamma and beta
    fc = 64 * 10 + 10
    assert sum(p.numel() for p in model.parameters()) == conv + bn + fc
    assert summarize(model.graph)["params"] == conv + bn + fc


def test_summary_macs_match_a_hand_count(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [3, 10, 10]}
        network:
          - conv: {out: 8, kernel: 3, stride: 1, padding: 1, groups: 1}
          - conv: {out: 8, kernel: 3, padding: 1, groups: 8}
          - global_avg_pool
          - linear: {out: 4}
    """)
    summary = summarize(compile_graph(path))
    assert [layer["macs"] for layer in summary["layers"]] == [
        8 * 10 * 10 * 3 * 9,  # every output element sums 3 channels x 3x3
        8 * 10 * 10 * 1 * 9,  # depthwise: one channel per group
        0,
        8 * 4,
    ]
    assert summary["output_shape"] == [4] and summary["input_shape"] == [3, 10, 10]


def test_forward_matches_the_same_torch_modules_by_hand():
    model = build_model("digits_cnn").eval()
    x = torch.rand(4, 1, 8, 8) * 16
    h = model.input_normalization(x)
    for stage in (model.stage1, model.stage2, model.stage3):
        h = torch.relu(stage.batchnorm1(stage.conv1(h)))
    expected = model.classifier(h.mean((2, 3)))
    torch.testing.assert_close(model(x), expected)


@pytest.mark.parametrize("source", ["specs/examples/tiny_unet.yaml",
                                    "specs/examples/inception_net.yaml", "resnet18"])
def test_resolve_loads_back_to_the_same_model(tmp_path, source):
    graph = compile_graph(source)
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(resolve_text(graph))
    original, again = build_model(source), build_model(resolved)
    assert list(original.state_dict()) == list(again.state_dict())
    assert {k: v.shape for k, v in original.state_dict().items()} == \
        {k: v.shape for k, v in again.state_dict().items()}
    again.load_state_dict(original.state_dict())
    x = torch.randn(2, *graph.inputs["input"].shape)
    torch.testing.assert_close(original.eval()(x), again.eval()(x))


def test_resolve_shows_shapes_as_comments():
    text = resolve_text(compile_graph("digits_cnn"))
    assert "id: stage2.conv1, conv: {out: 64, kernel: 3, stride: 2" in text
    assert "# -> (64x4x4)" in text


def test_same_seed_same_weights_other_seed_other_weights():
    a, b = build_model("digits_cnn", seed=1), build_model("digits_cnn", seed=1)
    c = build_model("digits_cnn", seed=2)
    torch.testing.assert_close(a.stage1.conv1.weight, b.stage1.conv1.weight)
    assert not torch.equal(a.stage1.conv1.weight, c.stage1.conv1.weight)


def test_ids_cannot_shadow_module_attributes(tmp_path):
    path = write_spec(tmp_path, """
        input: {shape: [4]}
        network:
          - linear: {out: 4}
            id: train
    """)
    with pytest.raises(SpecError, match="reserves"):
        build_model(path)


PLUGIN = '''
from typing import Literal
from torch import nn
from nnspec.compiler import LayerConfig, LayerKind, register_layer

class Square(nn.Module):
    def forward(self, x):
        return x * x

@register_layer
class SquareKind(LayerKind):
    name = "square_{tag}"
    summary = "x squared"
    class Config(LayerConfig):
        type: Literal["square_{tag}"] = "square_{tag}"
    def build(self, cfg, in_shapes):
        return Square()
'''


@pytest.fixture
def registry_snapshot(monkeypatch):
    """Plugins registered by a test vanish after it, as in a fresh process."""
    from nnspec.compiler.layers import registry

    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))


def test_plugin_module_registers_a_kind(tmp_path, monkeypatch, registry_snapshot):
    (tmp_path / "my_layers_a.py").write_text(textwrap.dedent(PLUGIN.format(tag="a")))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_layers_a", None)
    load_plugins(["my_layers_a"])
    path = write_spec(tmp_path, "input: {shape: [3]}\nnetwork: [square_a]\n")
    model = build_model(path)
    x = torch.tensor([[1.0, -2.0, 3.0]])
    torch.testing.assert_close(model(x), x * x)


def test_duplicate_kind_name_is_refused(tmp_path, monkeypatch, registry_snapshot):
    (tmp_path / "my_layers_b.py").write_text(textwrap.dedent(PLUGIN.format(tag="b")))
    (tmp_path / "my_layers_b2.py").write_text(textwrap.dedent(PLUGIN.format(tag="b")))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_layers_b", None)
    load_plugins(["my_layers_b"])
    with pytest.raises(UsageError, match="already registered"):
        load_plugins(["my_layers_b2"])
    for name in ("my_layers_a", "my_layers_b", "my_layers_b2"):
        sys.modules.pop(name, None)


def test_missing_plugin_module_is_a_usage_error():
    with pytest.raises(UsageError, match="cannot import plugin module"):
        load_plugins(["no_such_module_for_nnspec"])
