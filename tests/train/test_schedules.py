"""Learning-rate and momentum schedules: values by hand and against torch's own schedulers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nnspec.compiler import SpecError, load_spec
from nnspec.compiler.training_schema import OptimizerConfig, ScheduleConfig
from nnspec.runtime.train.optim import build_optimizer, momentum_of
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


def torch_trace(make_optimizer, make_scheduler, steps: int) -> list[tuple[float, float]]:
    """(lr, momentum or beta1) that a real torch optimizer steps with, step by step."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([param])
    scheduler = make_scheduler(optimizer)
    trace = []
    for _ in range(steps):
        group = optimizer.param_groups[0]
        trace.append((group["lr"], group["betas"][0] if "betas" in group else group["momentum"]))
        param.grad = torch.ones(1)
        optimizer.step()
        scheduler.step()
    return trace


def our_trace(optimizer_config: dict, lr_config: dict, spe: int, epochs: int):
    param = torch.nn.Parameter(torch.zeros(1))
    module = torch.nn.Module()
    module.weight = param
    optimizer = build_optimizer(module, OptimizerConfig(**optimizer_config))
    schedule = Schedule(ScheduleConfig(lr=lr_config), spe, epochs)
    trace = []
    for step in range(spe * epochs):
        schedule.apply(optimizer, step)
        group = optimizer.param_groups[0]
        trace.append((group["lr"], momentum_of(group)))
    return trace


OPTIMIZERS = {
    "sgd": ({"type": "sgd", "lr": 0.1, "momentum": 0.9},
            lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
    "adam": ({"type": "adam", "lr": 0.1}, lambda p: torch.optim.Adam(p, lr=0.1)),
    "rmsprop": ({"type": "rmsprop", "lr": 0.1},
                lambda p: torch.optim.RMSprop(p, lr=0.1, momentum=0.0)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("pct_start", [0.3, 0.25, 0.5, 0.1, 0.9])
@pytest.mark.parametrize("cycle_momentum", [True, False])
def test_one_cycle_lr_and_momentum_equal_torch_for_every_run_length(
    name, pct_start, cycle_momentum
):
    ours_config, make_optimizer = OPTIMIZERS[name]
    config = {"type": "one_cycle", "pct_start": pct_start, "div_factor": 10.0,
              "final_div_factor": 100.0, "cycle_momentum": cycle_momentum,
              "base_momentum": 0.8, "max_momentum": 0.9}
    compared = 0
    for total in [*range(1, 25), 37, 100]:
        def scheduler(o, total=total):
            return torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=0.1, total_steps=total, pct_start=pct_start, div_factor=10.0,
                final_div_factor=100.0, cycle_momentum=cycle_momentum, base_momentum=0.8,
                max_momentum=0.9)
        ours = our_trace(ours_config, config, total, 1)
        if pct_start * total == 1.0:  # torch divides 0 by 0 at step 0; nnspec: the peak
            with pytest.raises(ZeroDivisionError):
                torch_trace(make_optimizer, scheduler, total)
            assert ours[0][0] == pytest.approx(0.1)
            continue
        reference = torch_trace(make_optimizer, scheduler, total)
        np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-15,
                                   err_msg=f"{total} steps")
        compared += 1
    assert compared >= 24


def test_one_cycle_momentum_by_hand():
    ours = our_trace({"type": "sgd", "lr": 1.0, "momentum": 0.5}, {"type": "one_cycle"}, 11, 1)
    # rise ends at step 0.3 * 11 - 1 = 2.3; momentum 0.95 -> 0.85 on it, back to 0.95 at 10
    assert ours[0][1] == pytest.approx(0.95)
    assert ours[1][1] == pytest.approx(0.85 + 0.05 * (1 + math.cos(math.pi / 2.3)))
    assert ours[10] == pytest.approx((0.04 / 1e4, 0.95))


def test_one_cycle_without_cycle_momentum_keeps_the_optimizers_value():
    config = {"type": "one_cycle", "cycle_momentum": False}
    assert {m for _, m in our_trace({"momentum": 0.7}, config, 5, 2)} == {0.7}


@pytest.mark.parametrize(("spe", "epochs", "gamma"), [(1, 1, 0.5), (4, 6, 0.8), (3, 10, 1.1)])
def test_exponential_matches_torch_stepped_per_epoch(spe, epochs, gamma):
    reference = []
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    for _ in range(epochs):
        reference += [optimizer.param_groups[0]["lr"]] * spe
        optimizer.step()
        scheduler.step()
    ours = our_lrs({"type": "exponential", "gamma": gamma}, spe, epochs)
    assert ours == pytest.approx(reference, rel=1e-12)
    assert ours[-1] == pytest.approx(0.1 * gamma ** (epochs - 1))


def test_two_momentum_schedules_are_a_located_spec_error(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        "nnspec: 1\nname: t\ninput: {shape: [4]}\nnetwork: [{linear: {out: 2}}]\n"
        "schedule:\n  lr: {type: one_cycle}\n  momentum: {type: sutskever}\n")
    with pytest.raises(SpecError, match=r"net.yaml:7:\d+: schedule.momentum: two schedules "
                                        r"set the momentum(.|\n)*cycle_momentum: false"):
        load_spec(path)
    path.write_text(path.read_text().replace("one_cycle}", "one_cycle, cycle_momentum: false}"))
    assert load_spec(path).schedule.lr.cycle_momentum is False
