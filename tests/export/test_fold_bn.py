"""Batch-norm folding: same eval outputs, no batch norm left, caller's model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nnspec.compiler import ExportError, build_model
from nnspec.runtime.export.fold_bn import ChannelAffine, fold_batchnorm, plan_batchnorm_folding
from tests.export.fixtures import DROPOUT_BN_NET, RESIDUAL_NET, SMALL_CNN, trained


def _batchnorms(model: nn.Module) -> list[str]:
    return [
        name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


@pytest.fixture(scope="module")
def residual():
    return trained(RESIDUAL_NET)


@pytest.mark.parametrize("spec", [SMALL_CNN, RESIDUAL_NET, DROPOUT_BN_NET], ids=lambda s: s["name"])
def test_folded_model_matches_eval_model(spec):
    model = trained(spec)
    x = 2.0 * torch.randn(6, *spec["input"]["shape"]) + 1.0
    with torch.no_grad():
        want = model(x)
        got = fold_batchnorm(model)(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_and_grouped_convs_fold_correctly(groups):
    spec = {
        "nnspec": 1,
        "name": "upsampler",
        "input": {"shape": [4, 5, 5]},
        "network": [
            {"conv": {"out": 8, "kernel": 3, "groups": groups}},
            "batchnorm",
            {"conv_transpose": {"out": 6, "kernel": 2, "stride": 2, "groups": groups}},
            "batchnorm",
        ],
    }
    model = trained(spec)
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fold_batchnorm(model)(x), model(x), rtol=1e-4, atol=1e-5)
    plan = plan_batchnorm_folding(model)
    assert ("batchnorm2" in plan.merged) == (groups == 1)


def test_no_batchnorm_runs_after_folding(residual):
    folded = fold_batchnorm(residual)
    eval_ids = {n.id for n in folded.graph.eval_nodes()}
    left = [name for name in _batchnorms(folded) if name in eval_ids]
    assert left == []
    assert isinstance(folded.get_submodule("in_bn"), ChannelAffine)
    assert isinstance(folded.get_submodule("basic1.batchnorm1"), nn.Identity)


def test_plan_merges_only_single_consumer_convs(residual):
    plan = plan_batchnorm_folding(residual)
    assert plan.merged["batchnorm1"] == "conv1"
    assert plan.merged["basic2.shortcut.batchnorm1"] == "basic2.shortcut.conv1"
    # in_bn reads the input, post_bn follows an add, and skip_conv also feeds the add.
    assert sorted(plan.affine) == ["in_bn", "post_bn", "skip_bn"]
    assert len(plan.merged) == 6


def test_linear_batchnorm1d_pair_is_merged():
    model = trained(DROPOUT_BN_NET)
    plan = plan_batchnorm_folding(model)
    assert plan.merged == {"batchnorm1": "conv1", "batchnorm2": "linear1"}
    assert isinstance(fold_batchnorm(model).get_submodule("linear1"), nn.Linear)


def test_folding_leaves_the_callers_model_alone(residual):
    before = copy.deepcopy(residual.state_dict())
    residual.train()
    fold_batchnorm(residual)
    assert residual.training
    residual.eval()
    assert _batchnorms(residual)  # still batch norms
    after = residual.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_conv_without_bias_gains_the_folded_shift():
    model = trained(SMALL_CNN)
    bn = model.get_submodule("batchnorm1")
    assert model.get_submodule("conv1").bias is None
    conv = fold_batchnorm(model).get_submodule("conv1")
    # Hand computation: bias' = beta - mean * gamma / sqrt(var + eps).
    want = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(conv.bias, want.detach())


def test_channel_affine_matches_hand_computation():
    bn = nn.BatchNorm2d(2, eps=0.0).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([3.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, 0.0]))
    x = torch.tensor([5.0, 0.0]).view(1, 2, 1, 1)
    # (5 - 1) / 2 * 3 + 0.5 = 6.5 ; (0 + 2) / 0.5 * 1 + 0 = 4
    got = ChannelAffine.from_batchnorm(bn)(x)
    torch.testing.assert_close(got.flatten(), torch.tensor([6.5, 4.0]))


def test_batchnorm_without_running_stats_is_refused():
    spec = copy.deepcopy(SMALL_CNN)
    spec["network"][1] = {"batchnorm": {"track_running_stats": False}}
    with pytest.raises(ExportError, match="running statistics"):
        fold_batchnorm(build_model(spec))
