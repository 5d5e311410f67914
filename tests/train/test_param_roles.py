"""`optimizer.no_decay` by parameter role: every registered layer kind, built through the
compiler, declares a role for each of its parameters, and `bias` catches every parameter
torch names a bias."""

from __future__ import annotations

import re

import pytest

from nnspec.compiler import build_model
from nnspec.compiler.layers import get_kind, register_layer
from nnspec.compiler.layers.registry import ROLES, LayerConfig, LayerKind, declared_roles
from nnspec.compiler.training_schema import OptimizerConfig
from nnspec.runtime.train.optim import param_groups, parameter_roles
from tests.compiler.test_layers import CASES

# torch's own bias names: `bias`, `in_proj_bias`, LSTM/GRU's `bias_ih_l0`, `bias_hh_l1_reverse`
TORCH_BIAS = re.compile(r"(^|\.)(bias|\w+_bias|bias_\w+)$")
CATEGORIES = ["bias", "norm", "embedding", "scale"]


def decayed(model, no_decay: list[str]) -> set[str]:
    groups = param_groups(model, OptimizerConfig(weight_decay=0.1, no_decay=no_decay))
    return {n for g in groups if g["weight_decay"] for n in g["names"]}


@pytest.mark.parametrize(("kind", "input_spec", "network"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_parameter_of_every_kind_has_a_declared_role(kind, input_spec, network):
    model = build_model({"nnspec": 1, "name": "t", "input": input_spec, "network": network})
    roles = parameter_roles(model)
    for node in model.graph.nodes:
        for pname, _ in model.get_submodule(node.id).named_parameters():
            declared = declared_roles(get_kind(node.kind).param_roles, pname)
            assert declared, f"{node.kind}: parameter {pname} has no declared role"
            assert declared <= set(ROLES)
            assert roles[f"{node.id}.{pname}"] >= declared
    names = set(roles)
    torch_biases = {n for n in names if TORCH_BIAS.search(n)}
    assert names - decayed(model, ["bias"]) >= torch_biases
    plain_weights = {n for n, r in roles.items() if r == {"weight"}}
    assert decayed(model, CATEGORIES) == plain_weights
    assert not plain_weights & torch_biases


def test_lstm_attention_and_token_parameters_are_exempted_by_their_roles():
    model = build_model({
        "nnspec": 1, "name": "t", "input": {"shape": [4, 4, 8]},
        "network": [
            {"window_partition": {"size": 2}},
            {"self_attention": {"heads": 2, "cosine": True,
                                "position_bias": {"window": 2, "mlp": 4}}, "id": "swin2"},
            {"window_partition": {"size": 2}, "from": "input"},
            {"self_attention": {"heads": 2, "position_bias": {"window": 2}}, "id": "swin"},
            {"reshape": {"shape": [16, 8]}},
            {"position_embedding": {}, "id": "pos"},
            {"class_token": {}, "id": "cls"},
            {"scale": {"learnable": True, "dim": -1}, "id": "ls"},
            {"lstm": {"hidden": 3, "bidirectional": True}, "id": "rnn"},
        ]})
    assert decayed(model, []) == set(parameter_roles(model))
    assert decayed(model, ["bias"]).isdisjoint({
        "swin.in_proj_bias", "swin.out_proj.bias", "swin2.cpb_mlp.0.bias",
        "rnn.bias_ih_l0", "rnn.bias_hh_l0", "rnn.bias_ih_l0_reverse", "rnn.bias_hh_l0_reverse"})
    assert "swin.relative_position_bias_table" in decayed(model, ["bias"])
    embedding = {"swin.relative_position_bias_table", "swin2.cpb_mlp.0.weight",
                 "swin2.cpb_mlp.0.bias", "swin2.cpb_mlp.2.weight", "pos.embedding", "cls.token"}
    assert decayed(model, []) - decayed(model, ["embedding"]) == embedding
    assert decayed(model, []) - decayed(model, ["scale"]) == {"ls.weight", "swin2.logit_scale"}
    assert decayed(model, CATEGORIES) == {
        "swin.in_proj_weight", "swin.out_proj.weight", "swin2.in_proj_weight",
        "swin2.out_proj.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0",
        "rnn.weight_ih_l0_reverse", "rnn.weight_hh_l0_reverse"}


def test_roles_and_globs_combine():
    model = build_model({
        "nnspec": 1, "name": "t", "input": {"shape": [6], "dtype": "int64"},
        "network": [{"embedding": {"num": 10, "dim": 4}, "id": "embed"},
                    {"layernorm": {}, "id": "norm"}, {"linear": {"out": 2}, "id": "head"}]})
    assert decayed(model, ["norm", "head.*"]) == {"embed.weight"}
    assert decayed(model, ["embedding", "bias"]) == {"norm.weight", "head.weight"}
    assert decayed(model, ["norm"]) == {"embed.weight", "head.weight", "head.bias"}


def test_a_kind_declaring_an_unknown_role_is_refused():
    class Odd(LayerKind):
        name = "odd_roles_kind"
        param_roles = {"weight": "gain"}

        class Config(LayerConfig):
            type: str = "odd_roles_kind"

    with pytest.raises(ValueError, match="unknown role"):
        register_layer(Odd)
