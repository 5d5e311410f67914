"""Optimizers from the spec's `optimizer` section, checked against hand computations of a few
steps (the lecture's update rules), and the parameter groups they are built with."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nnspec.compiler import SpecError, load_spec
from nnspec.compiler.training_schema import OptimizerConfig
from nnspec.runtime.train.optim import build_optimizer, momentum_of, set_momentum

W0 = [1.0, -2.0, 0.5]
CURVATURE = [0.5, 1.0, 2.0]  # loss = sum(a * w^2) / 2, so grad = a * w


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(W0, dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        return 0.5 * (torch.tensor(CURVATURE, dtype=torch.float64) * self.weight**2).sum()


def run_steps(config: dict, steps: int = 3) -> list[float]:
    model = Quadratic()
    optimizer = build_optimizer(model, OptimizerConfig(**config))
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss().backward()
        optimizer.step()
    return model.weight.detach().tolist()


def grad(w: list[float]) -> list[float]:
    return [a * x for a, x in zip(CURVATURE, w, strict=True)]


def test_sgd_momentum_follows_v_beta_v_minus_lr_grad():
    lr, beta = 0.1, 0.9
    w, v = list(W0), [0.0] * 3
    for _ in range(3):
        g = grad(w)
        v = [beta * vi - lr * gi for vi, gi in zip(v, g, strict=True)]
        w = [wi + vi for wi, vi in zip(w, v, strict=True)]
    assert run_steps({"type": "sgd", "lr": lr, "momentum": beta}) == pytest.approx(w, rel=1e-12)


def test_sgd_l2_decay_enters_the_velocity():
    # Lecture: v_i = beta v_{i-1} - lr grad(w) - lr lambda w_{i-1}
    lr, beta, lam = 0.1, 0.9, 0.05
    w, v = list(W0), [0.0] * 3
    for _ in range(3):
        g = grad(w)
        v = [beta * vi - lr * gi - lr * lam * wi for vi, gi, wi in zip(v, g, w, strict=True)]
        w = [wi + vi for wi, vi in zip(w, v, strict=True)]
    got = run_steps({"lr": lr, "momentum": beta, "weight_decay": lam})
    assert got == pytest.approx(w, rel=1e-12)


def test_sgd_decoupled_decay_shrinks_weights_outside_the_velocity():
    lr, beta, lam = 0.1, 0.9, 0.05
    w, v = list(W0), [0.0] * 3
    for _ in range(3):
        g = grad(w)
        w = [wi * (1 - lr * lam) for wi in w]
        v = [beta * vi - lr * gi for vi, gi in zip(v, g, strict=True)]
        w = [wi + vi for wi, vi in zip(w, v, strict=True)]
    config = {"lr": lr, "momentum": beta, "weight_decay": lam, "weight_decay_mode": "decoupled"}
    decoupled = run_steps(config)
    assert decoupled == pytest.approx(w, rel=1e-12)
    assert decoupled != pytest.approx(run_steps({**config, "weight_decay_mode": "l2"}))


def adam_by_hand(lr, lam, decoupled, steps=3, b1=0.9, b2=0.999, eps=1e-8):
    w, m, s = list(W0), [0.0] * 3, [0.0] * 3
    for i in range(1, steps + 1):
        g = grad(w)
        if not decoupled:
            g = [gi + lam * wi for gi, wi in zip(g, w, strict=True)]
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
        s = [b2 * si + (1 - b2) * gi * gi for si, gi in zip(s, g, strict=True)]
        step = [
            lr * (mi / (1 - b1**i)) / (math.sqrt(si / (1 - b2**i)) + eps)
            for mi, si in zip(m, s, strict=True)
        ]
        shrink = lr * lam if decoupled else 0.0
        w = [wi - shrink * wi - st for wi, st in zip(w, step, strict=True)]
    return w


def test_adam_with_l2_and_adamw_match_their_formulas_and_differ():
    lr, lam = 0.01, 0.1
    l2 = run_steps({"type": "adam", "lr": lr, "weight_decay": lam})
    adamw = run_steps({"type": "adamw", "lr": lr, "weight_decay": lam})
    assert l2 == pytest.approx(adam_by_hand(lr, lam, decoupled=False), rel=1e-10)
    assert adamw == pytest.approx(adam_by_hand(lr, lam, decoupled=True), rel=1e-10)
    assert max(abs(a - b) for a, b in zip(l2, adamw, strict=True)) > 1e-4
    decoupled_adam = {"type": "adam", "lr": lr, "weight_decay": lam}
    decoupled_adam["weight_decay_mode"] = "decoupled"
    assert run_steps(decoupled_adam) == pytest.approx(adamw, rel=1e-12)


def test_rmsprop_matches_torch_reference():
    config = {"type": "rmsprop", "lr": 0.01, "momentum": 0.5, "weight_decay": 0.1}
    reference = Quadratic()
    torch_opt = torch.optim.RMSprop(reference.parameters(), lr=0.01, momentum=0.5, weight_decay=0.1)
    for _ in range(3):
        torch_opt.zero_grad()
        reference.loss().backward()
        torch_opt.step()
    assert run_steps(config) == pytest.approx(reference.weight.tolist(), rel=1e-12)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.head = nn.Sequential()
        self.head.add_module("norm", nn.LayerNorm(4))
        self.head.add_module("fc", nn.Linear(4, 2))


def groups_by_name(optimizer) -> dict[str, dict]:
    return {n: g for g in optimizer.param_groups for n in g["names"]}


def test_no_decay_exempts_biases_and_norm_layers():
    config = OptimizerConfig(weight_decay=0.01, no_decay=["bias", "norm"])
    by_name = groups_by_name(build_optimizer(Net(), config))
    decayed = {n for n, g in by_name.items() if g["weight_decay"] == 0.01}
    assert decayed == {"conv1.weight", "head.fc.weight"}
    assert {n for n, g in by_name.items() if g["weight_decay"] == 0.0} == {
        "conv1.bias",
        "bn1.weight",
        "bn1.bias",
        "head.norm.weight",
        "head.norm.bias",
        "head.fc.bias",
    }


def test_param_groups_by_id_pattern_get_their_own_lr():
    config = OptimizerConfig(
        lr=0.1, weight_decay=0.01, no_decay=["bias"], groups=[{"params": ["head"], "lr": 0.01}]
    )
    optimizer = build_optimizer(Net(), config)
    by_name = groups_by_name(optimizer)
    assert by_name["head.fc.weight"]["lr"] == 0.01
    assert by_name["head.norm.weight"]["lr"] == 0.01
    assert by_name["head.fc.bias"]["weight_decay"] == 0.0
    assert by_name["conv1.weight"]["lr"] == 0.1
    assert all(g["initial_lr"] == g["lr"] for g in optimizer.param_groups)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(Net().parameters()))


def test_momentum_setting_reaches_sgd_and_adam_groups():
    sgd = build_optimizer(Quadratic(), OptimizerConfig(type="sgd", momentum=0.5))
    adam = build_optimizer(Quadratic(), OptimizerConfig(type="adam"))
    for optimizer, before in ((sgd, 0.5), (adam, 0.9)):
        group = optimizer.param_groups[0]
        assert momentum_of(group) == before
        set_momentum(group, 0.75)
        assert momentum_of(group) == 0.75
    assert adam.param_groups[0]["betas"] == (0.75, 0.999)


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"type": "adamw", "weight_decay_mode": "l2"}, "adamw decouples weight decay"),
        ({"type": "sgd", "nesterov": True}, "nesterov needs"),
        ({"type": "lamb"}, "optimizer.type"),
        ({"momentum": 1.5}, "optimizer.momentum"),
    ],
)
def test_bad_optimizer_sections_are_spec_errors(optimizer, message):
    spec = {"nnspec": 1, "name": "t", "input": {"shape": [4]}, "network": [{"linear": {"out": 2}}]}
    with pytest.raises(SpecError, match=message):
        load_spec({**spec, "optimizer": optimizer})
