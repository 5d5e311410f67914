"""Init statistics: exact values on a small net, and the lecture's variance arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnspec.runtime.lab.init_stats import (
    format_table,
    layer_statistics,
    plot_std_by_depth,
    standard_normal_inputs,
)


def _plain_relu_mlp(depth: int, width: int, init) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        linear = nn.Linear(width, width, bias=False)
        init(linear.weight)
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def test_statistics_equal_a_direct_torch_computation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    (x,) = standard_normal_inputs([(5,)], batch=16, seed=3)
    stats = layer_statistics(model, [x], seed=4)

    h1 = model[0](x)
    h2 = torch.tanh(h1)
    out = model[2](h2)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    g_h2, g_h1, w_grad = torch.autograd.grad(out, [h2, h1, model[2].weight], upstream)

    assert [s.name for s in stats] == ["0", "1", "2"]
    assert [s.kind for s in stats] == ["Linear", "Tanh", "Linear"]
    assert stats[1].shape == [7]
    assert stats[0].act_mean == pytest.approx(float(h1.detach().mean()), rel=1e-5)
    assert stats[1].act_std == pytest.approx(float(h2.detach().std()), rel=1e-5)
    assert stats[2].grad_std == pytest.approx(float(upstream.std()), rel=1e-5)
    assert stats[1].grad_std == pytest.approx(float(g_h2.std()), rel=1e-5)
    assert stats[0].grad_std == pytest.approx(float(g_h1.std()), rel=1e-5)
    assert stats[2].weight_grad_std == pytest.approx(float(w_grad.std()), rel=1e-5)
    assert stats[1].weight_grad_std is None
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_kaiming_keeps_relu_activations_while_small_normal_makes_them_vanish():
    torch.manual_seed(0)
    depth, width = 20, 128
    kaiming = _plain_relu_mlp(depth, width, lambda w: nn.init.kaiming_normal_(w))
    small = _plain_relu_mlp(depth, width, lambda w: nn.init.normal_(w, std=0.01))
    (x,) = standard_normal_inputs([(width,)], batch=256, seed=0)

    def linear_stds(model):
        return [s.act_std for s in layer_statistics(model, [x]) if s.kind == "Linear"]

    k = linear_stds(kaiming)
    s = linear_stds(small)
    # He et al.: Var(W) = 2/n keeps E[y^2] constant through ReLU layers.
    assert 0.4 < k[-1] / k[0] < 2.5
    # With std 0.01 each layer scales the second moment by n * 0.01^2 / 2, so the std by
    # sqrt(128 * 1e-4 / 2) = 0.08 per layer: 19 layers later, about 1e-21 of the first.
    per_layer = math.sqrt(width * 0.01**2 / 2)
    expected = per_layer ** (depth - 1)
    assert s[-1] / s[0] == pytest.approx(expected, rel=0.5)


def test_table_and_plot(tmp_path):
    torch.manual_seed(0)
    model = _plain_relu_mlp(3, 8, lambda w: nn.init.kaiming_normal_(w))
    (x,) = standard_normal_inputs([(8,)], batch=32, seed=0)
    stats = layer_statistics(model, [x])
    table = format_table(stats)
    assert table.splitlines()[2].split()[:3] == ["1", "0", "Linear"]
    assert len(table.splitlines()) == 2 + 6
    figure = plot_std_by_depth({"kaiming": stats, "again": stats}, tmp_path / "std.png")
    assert (tmp_path / "std.png").read_bytes()[:4] == b"\x89PNG"
    act_axis = figure.axes[0]
    assert [len(line.get_xdata()) for line in act_axis.get_lines()] == [3, 3]


def test_command_feeds_unit_normal_data_after_the_input_normalisation(tmp_path, capsys):
    import json

    from nnspec.runtime.cli import main

    spec = tmp_path / "net.yaml"
    spec.write_text(
        "nnspec: 1\nname: net\ninput: {shape: [2, 4, 4]}\n"
        "normalize: {mean: [100.0, -3.0], std: [50.0, 0.5]}\n"
        "init: {conv: kaiming_normal}\n"
        "network: [conv: {out: 8, kernel: 3}, relu, global_avg_pool, linear: {out: 3}]\n"
    )
    plot = tmp_path / "std.png"
    assert main(["init-stats", str(spec), "--json", "--batch", "512", "--plot", str(plot)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["series"]) == ["spec init", "kaiming_normal", "xavier_normal", "normal_0.01"]
    first = data["series"]["spec init"][0]
    assert first["name"] == "input_normalization"
    assert first["act_mean"] == pytest.approx(0.0, abs=0.05)
    assert first["act_std"] == pytest.approx(1.0, abs=0.05)
    assert [s["kind"] for s in data["series"]["spec init"][1:]] == [
        "conv", "relu", "global_avg_pool", "linear"
    ]  # fmt: skip
    assert plot.read_bytes()[:4] == b"\x89PNG"
