"""Learning-rate and momentum schedules: values by hand and against torch's own schedulers."""

from __future__ import annotations

import math

import pytest
import torch

from nnspec.compiler.training_schema import OptimizerConfig, ScheduleConfig
from nnspec.runtime.train.optim import build_optimizer
from nnspec.runtime.train.schedules import Schedule, sutskever_momentum


def torch_lrs(make_scheduler, steps: int, lr: float = 0.1) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def our_lrs(lr_config: dict, steps_per_epoch: int, epochs: int, lr: float = 0.1) -> list[float]:
    schedule = Schedule(ScheduleConfig(lr=lr_config), steps_per_epoch, epochs)
    return [schedule.lr_at(s, lr) for s in range(steps_per_epoch * epochs)]


def test_sutskever_schedule_values_by_hand():
    # 1 - 2^(-1 - log2(k + 1)) = 1 - 1 / (2 (k + 1)) with k = floor(t / 250)
    assert sutskever_momentum(0, 0.99) == pytest.approx(0.5)
    assert sutskever_momentum(249, 0.99) == pytest.approx(0.5)
    assert sutskever_momentum(250, 0.99) == pytest.approx(0.75)
    assert sutskever_momentum(500, 0.99) == pytest.approx(1 - 1 / 6)
    assert sutskever_momentum(750, 0.99) == pytest.approx(0.875)
    assert sutskever_momentum(250 * 49, 0.99) == pytest.approx(0.99)  # 1 - 1/100, the cap
    assert sutskever_momentum(10**6, 0.99) == 0.99
    assert sutskever_momentum(10**6, 0.9) == 0.9


def test_sutskever_schedule_sets_sgd_momentum_and_adam_beta1():
    config = ScheduleConfig(momentum={"type": "sutskever", "max": 0.95})
    schedule = Schedule(config, steps_per_epoch=100, epochs=10)
    param = torch.nn.Parameter(torch.zeros(1))
    module = torch.nn.Module()
    module.weight = param
    sgd = build_optimizer(module, OptimizerConfig(type="sgd", momentum=0.9))
    adam = build_optimizer(module, OptimizerConfig(type="adam"))
    schedule.apply(sgd, 600)
    schedule.apply(adam, 600)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(1 - 1 / 6)
    assert adam.param_groups[0]["betas"][0] == pytest.approx(1 - 1 / 6)


def test_step_and_multistep_match_torch():
    spe = 4
    step = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 2 * spe, 0.5), 6 * spe)
    assert our_lrs({"type": "step", "step_epochs": 2, "gamma": 0.5}, spe, 6) == pytest.approx(step)
    multi = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [8, 20], 0.1), 6 * spe)
    config = {"type": "multistep", "milestones": [2, 5]}
    assert our_lrs(config, spe, 6) == pytest.approx(multi)


def test_cosine_matches_torch_and_ends_at_min_lr():
    total = 30
    reference = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - 1, eta_min=0.001),
        total,
    )
    ours = our_lrs({"type": "cosine", "min_lr": 0.001}, 10, 3)
    assert ours == pytest.approx(reference, rel=1e-9)
    assert ours[-1] == pytest.approx(0.001)


def test_one_cycle_matches_torch():
    reference = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=50), 50
    )
    assert our_lrs({"type": "one_cycle"}, 10, 5) == pytest.approx(reference, rel=1e-9)


def test_linear_warmup_then_cosine_over_the_remaining_steps():
    lrs = our_lrs({"type": "cosine", "warmup_epochs": 1}, 5, 3)
    assert lrs[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])
    rest = [0.05 * (1 + math.cos(math.pi * u / 9)) for u in range(10)]
    assert lrs[5:] == pytest.approx(rest)


def test_schedule_scales_each_param_group_from_its_own_lr():
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    config = OptimizerConfig(lr=0.1, groups=[{"params": ["1"], "lr": 0.01}])
    optimizer = build_optimizer(module, config)
    Schedule(ScheduleConfig(lr={"type": "step", "step_epochs": 1}), 10, 3).apply(optimizer, 10)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([0.001, 0.01])
