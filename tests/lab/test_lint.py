"""Lint rules: each fires on a small spec showing the problem and stays quiet on its fix."""

from __future__ import annotations

import copy

import pytest

from nnspec.compiler import SpecError, compile_graph, load_spec
from nnspec.runtime.cli import main
from nnspec.runtime.lab.lint import RULES, lint

CLEAN = {
    "nnspec": 1,
    "name": "clean",
    "input": {"shape": [3, 8, 8]},
    "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    "init": {"conv": "kaiming_normal", "linear": "xavier_uniform"},
    "network": [
        {"conv": {"out": 8, "kernel": 3, "padding": 1, "bias": False}},
        "batchnorm",
        "relu",
        "global_avg_pool",
        {"linear": {"out": 10}},
    ],
    "optimizer": {"type": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4,
                  "no_decay": ["bias", "norm"]},
    "schedule": {"lr": {"type": "cosine", "warmup_epochs": 1}},
}  # fmt: skip


def _spec(**changes) -> dict:
    spec = copy.deepcopy(CLEAN)
    spec.update(changes)
    return spec


def _rules_fired(data: dict) -> list[str]:
    spec = load_spec(data)
    return [f.rule for f in lint(compile_graph(spec), spec)]


def _plain_mlp(depth: int, extra: list | None = None) -> list:
    return ["flatten", *([{"linear": {"out": 16}}, "relu"] * depth), *(extra or [])]


def test_clean_spec_has_no_warnings():
    assert _rules_fired(CLEAN) == []


BAD_SPECS = {
    "bias-before-norm": _spec(
        network=[{"conv": {"out": 8, "kernel": 3}}, "batchnorm", "relu", "global_avg_pool"]
    ),
    "dropout-before-norm": _spec(
        network=[
            "flatten",
            {"linear": {"out": 8, "bias": False}},
            "relu",
            "dropout",
            "batchnorm",
            {"linear": {"out": 2}},
        ]  # fmt: skip
    ),
    "init-activation-mismatch": _spec(
        init={"linear": "kaiming_normal"},
        network=["flatten", {"linear": {"out": 8}}, "tanh", {"linear": {"out": 2}}],
    ),
    "deep-plain-stack": _spec(network=_plain_mlp(20)),
    "no-input-normalization": _spec(normalize=None),
    "decay-on-norm-and-bias": _spec(
        optimizer={"type": "sgd", "lr": 0.01, "weight_decay": 1e-4, "no_decay": ["bias"]}
    ),
    "adam-with-l2": _spec(
        optimizer={
            "type": "adam",
            "lr": 1e-3,
            "weight_decay": 0.01,
            "weight_decay_mode": "l2",
            "no_decay": ["bias", "norm"],
        }  # fmt: skip
    ),
    "momentum-without-schedule": _spec(schedule=None),
    "large-fc-head": _spec(
        network=[
            {"conv": {"out": 8, "kernel": 3, "padding": 1}},
            "relu",
            "flatten",
            {"linear": {"out": 64}},
            "relu",
            {"linear": {"out": 10}},
        ]  # fmt: skip
    ),
}

FIXED_SPECS = {
    "bias-before-norm": CLEAN,
    "dropout-before-norm": _spec(
        network=[
            "flatten",
            {"linear": {"out": 8, "bias": False}},
            "batchnorm",
            "relu",
            "dropout",
            {"linear": {"out": 2}},
        ]  # fmt: skip
    ),
    "init-activation-mismatch": _spec(
        init={"linear": "xavier_normal"},
        network=["flatten", {"linear": {"out": 8}}, "tanh", {"linear": {"out": 2}}],
    ),
    "deep-plain-stack": _spec(network=_plain_mlp(19)),
    "no-input-normalization": _spec(normalize="auto"),
    "decay-on-norm-and-bias": CLEAN,
    "adam-with-l2": _spec(
        optimizer={
            "type": "adamw",
            "lr": 1e-3,
            "weight_decay": 0.01,
            "no_decay": ["bias", "norm"],
        }  # fmt: skip
    ),
    "momentum-without-schedule": _spec(schedule={"momentum": {"type": "sutskever", "max": 0.99}}),
    "large-fc-head": CLEAN,
}


def test_every_registered_rule_is_tested():
    assert set(BAD_SPECS) == set(RULES) == set(FIXED_SPECS)


@pytest.mark.parametrize("rule", sorted(BAD_SPECS))
def test_rule_fires_on_the_problem(rule):
    assert rule in _rules_fired(BAD_SPECS[rule])


@pytest.mark.parametrize("rule", sorted(FIXED_SPECS))
def test_rule_is_quiet_on_the_fix(rule):
    assert rule not in _rules_fired(FIXED_SPECS[rule])


def test_init_mismatch_fires_for_xavier_before_relu_through_batch_norm():
    data = _spec(
        init={"conv": "xavier_uniform"},
        network=[
            {"conv": {"out": 8, "kernel": 3, "bias": False}},
            "batchnorm",
            "relu",
            "global_avg_pool",
        ],  # fmt: skip
    )
    assert _rules_fired(data) == ["init-activation-mismatch"]


def test_residual_network_of_depth_20_is_not_a_plain_stack():
    data = _spec(
        network=[
            "flatten",
            {"linear": {"out": 16}},
            {"residual": {"body": [{"linear": {"out": 16}}, "relu"] * 2}, "repeat": 10},
        ]
    )
    assert "deep-plain-stack" not in _rules_fired(data)


def test_warnings_point_at_file_line_and_column(tmp_path, capsys):
    path = tmp_path / "net.yaml"
    path.write_text(
        "nnspec: 1\n"
        "name: net\n"
        "input: {shape: [3, 8, 8]}\n"
        "normalize: auto\n"
        "network:\n"
        "  - conv: {out: 8, kernel: 3}\n"
        "  - batchnorm\n"
        "  - relu\n"
        "  - global_avg_pool\n"
    )
    assert main(["lint", str(path)]) == 1
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith(f"{path}:6:5: warning[bias-before-norm]: network[0] (conv1): ")
    assert out.splitlines()[1].strip().startswith("why: batch norm subtracts the mean")


def test_exit_codes_clean_and_bad_spec(tmp_path, capsys):
    path = tmp_path / "ok.yaml"
    path.write_text(
        "nnspec: 1\nname: ok\ninput: {shape: [4]}\nnormalize: auto\nnetwork: [linear: {out: 2}]\n"
    )
    assert main(["lint", str(path)]) == 0
    assert "no warnings" in capsys.readouterr().out
    broken = tmp_path / "broken.yaml"
    broken.write_text("nnspec: 1\nname: broken\ninput: {shape: [4]}\nnetwork: [linaer]\n")
    assert main(["lint", str(broken)]) == 2
    assert "linaer" in capsys.readouterr().err


def test_ignored_rules_are_switched_off_and_misspelt_ones_refused():
    data = _spec(normalize=None, lint={"ignore": ["no-input-normalization"]})
    assert _rules_fired(data) == []
    data["lint"] = {"ignore": ["no-input-normalisation"]}
    with pytest.raises(SpecError, match="did you mean 'no-input-normalization'"):
        _rules_fired(data)


def test_every_rule_has_a_reason_and_documentation():
    for rule in RULES.values():
        assert rule.reason and len(rule.doc) > 60, rule.name


def test_kaiming_with_a_tanh_gain_is_not_a_mismatch():
    network = ["global_avg_pool", {"linear": {"out": 8}}, "tanh", {"linear": {"out": 2}}]
    per_scheme = _spec(
        init={"linear": {"scheme": "kaiming_normal", "nonlinearity": "tanh"}}, network=network
    )
    global_gain = _spec(init={"linear": "kaiming_normal", "nonlinearity": "tanh"}, network=network)
    assert _rules_fired(per_scheme) == _rules_fired(global_gain) == []


def test_one_cycle_counts_as_a_warmup_for_momentum_without_schedule():
    # one_cycle starts at lr / div_factor and ramps up: the lr warmup the rule asks for
    assert "momentum-without-schedule" not in _rules_fired(
        _spec(schedule={"lr": {"type": "one_cycle"}})
    )
