"""Initialisation: the statistics each scheme promises, overrides and zero-init residuals."""

from __future__ import annotations

import math

import pytest
import torch

from nnspec.compiler import SpecError, build_model
from tests.compiler.fixtures import write_spec


def _model(tmp_path, init: str, node_init: str = ""):
    return build_model(write_spec(tmp_path, f"""
        input: {{shape: [64, 16, 16]}}
        init: {init}
        network:
          - conv: {{out: 256, kernel: 3, padding: 1}}
          - relu
          - global_avg_pool
          - linear: {{out: 512}}
            {node_init}
    """))


def test_kaiming_normal_fan_in_std(tmp_path):
    model = _model(tmp_path, "{conv: kaiming_normal, bias: zeros}")
    w = model.conv1.weight
    fan_in = 64 * 9
    # 147,456 samples: the std's standard error is ~0.2%
    assert w.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    assert w.mean().item() == pytest.approx(0.0, abs=0.01 * math.sqrt(2 / fan_in) * 10)
    assert torch.count_nonzero(model.conv1.bias) == 0


def test_kaiming_fan_out_and_xavier_uniform_bound(tmp_path):
    model = _model(tmp_path, "{conv: {scheme: kaiming_normal, mode: fan_out}, "
                             "linear: xavier_uniform}")
    assert model.conv1.weight.std().item() == pytest.approx(math.sqrt(2 / (256 * 9)), rel=0.02)
    bound = math.sqrt(6 / (256 + 512))
    w = model.linear1.weight
    assert w.abs().max().item() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # uniform std


def test_lecun_normal_is_the_lectures_xavier(tmp_path):
    model = _model(tmp_path, "{linear: lecun_normal}")
    assert model.linear1.weight.std().item() == pytest.approx(math.sqrt(1 / 256), rel=0.02)


def test_node_override_beats_the_category_default(tmp_path):
    model = _model(tmp_path, "{linear: xavier_uniform}",
                   "init: {weight: {scheme: normal, std: 0.01}, bias: {scheme: constant, value: 0.5}}")
    assert model.linear1.weight.std().item() == pytest.approx(0.01, rel=0.03)
    assert torch.all(model.linear1.bias == 0.5)


def test_kind_entry_beats_the_category(tmp_path):
    model = build_model(write_spec(tmp_path, """
        input: {shape: [4, 8, 8]}
        init: {conv: ones, conv_transpose: zeros}
        network:
          - conv: {out: 4, kernel: 1, bias: false}
          - conv_transpose: {out: 4, kernel: 2, stride: 2, bias: false}
    """))
    assert torch.all(model.conv1.weight == 1)
    assert torch.all(model.conv_transpose1.weight == 0)


def test_zero_init_residual_zeroes_the_last_norm_of_each_body(tmp_path):
    model = build_model(write_spec(tmp_path, """
        input: {shape: [4, 8, 8]}
        init: {zero_init_residual: true}
        network:
          - residual:
              body:
                - conv: {out: 4, kernel: 3, padding: 1}
                - batchnorm
                - relu
                - conv: {out: 4, kernel: 3, padding: 1}
                - batchnorm
    """))
    assert torch.all(model.residual1.batchnorm2.weight == 0)
    assert torch.all(model.residual1.batchnorm1.weight == 1)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(model.eval()(x), x)  # the block starts as the identity


def test_fan_based_scheme_on_a_bias_is_a_located_error(tmp_path):
    with pytest.raises(SpecError, match="kaiming_normal needs a weight with 2 or more dims"):
        _model(tmp_path, "{bias: kaiming_normal}")
