"""The update rules docs/training.md states ("Update rules, exactly as executed"), written out
in numpy, against the optimizer and schedule nnspec builds, over the steps of a warmup + cosine
schedule (the lr changes every step). Also: the lecture's velocity form differs from them as
soon as the lr changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nnspec.compiler.training_schema import OptimizerConfig, ScheduleConfig
from nnspec.runtime.train.optim import build_optimizer
from nnspec.runtime.train.schedules import Schedule

# loss = w'Aw / 2 - c'w: an ill-conditioned quadratic, gradient A w - c
A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.1]])
C = np.array([1.0, -2.0, 0.5])
W0 = np.array([1.0, -2.0, 0.5])
LR, LAMBDA = 0.1, 0.05
SPE, EPOCHS = 3, 4  # 12 steps: 3 of warmup, 9 of cosine
WARMUP_COSINE = {"type": "cosine", "warmup_epochs": 1, "min_lr": 0.001}


def documented_lr(t: int, base: float = LR) -> float:
    """docs/training.md: a linear warmup from lr / W to lr, then a cosine to min_lr over the
    steps left (step t counted from 0)."""
    warmup, total, low = SPE, SPE * EPOCHS, 0.001
    if t < warmup:
        return base * (t + 1) / warmup
    u = (t - warmup) / (total - warmup - 1)
    return low + (base - low) * (1 + math.cos(math.pi * u)) / 2


def grad(w: np.ndarray) -> np.ndarray:
    return A @ w - C


class Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(W0, dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        w = self.weight
        a, c = torch.tensor(A), torch.tensor(C)
        return 0.5 * w @ a @ w - c @ w


def nnspec_weights(optimizer_config: dict, schedule: dict = WARMUP_COSINE) -> np.ndarray:
    model = Quadratic()
    optimizer = build_optimizer(model, OptimizerConfig(**optimizer_config))
    plan = Schedule(ScheduleConfig(lr=schedule), SPE, EPOCHS)
    for step in range(SPE * EPOCHS):
        plan.apply(optimizer, step)
        optimizer.zero_grad()
        model.loss().backward()
        optimizer.step()
    return model.weight.detach().numpy()


def with_decay(w: np.ndarray, g: np.ndarray, lr: float, decay: str):
    """The documented decay step: L2 adds lambda w to the gradient; decoupled shrinks the
    weight by lr lambda before the update. Returns (w, g)."""
    if decay == "l2":
        return w, g + LAMBDA * w
    return w * (1 - lr * LAMBDA), g


def documented_sgd(mu: float, decay: str, nesterov: bool = False, lrs=documented_lr):
    w, b = W0.copy(), np.zeros(3)
    for step in range(SPE * EPOCHS):
        lr = lrs(step)
        w, g = with_decay(w, grad(w), lr, decay)
        b = mu * b + g
        w = w - lr * ((g + mu * b) if nesterov else b)
    return w


def documented_adam(decoupled: bool, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    w, m, s = W0.copy(), np.zeros(3), np.zeros(3)
    for step in range(SPE * EPOCHS):
        t, lr = step + 1, documented_lr(step)
        w, g = with_decay(w, grad(w), lr, "decoupled" if decoupled else "l2")
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * g * g
        w = w - lr * (m / (1 - b1**t)) / (np.sqrt(s / (1 - b2**t)) + eps)
    return w


def documented_rmsprop(mu: float, decay: str, alpha: float = 0.99, eps: float = 1e-8):
    w, s, b = W0.copy(), np.zeros(3), np.zeros(3)
    for step in range(SPE * EPOCHS):
        lr = documented_lr(step)
        w, g = with_decay(w, grad(w), lr, decay)
        s = alpha * s + (1 - alpha) * g * g
        if mu:
            b = mu * b + g / (np.sqrt(s) + eps)
            w = w - lr * b
        else:
            w = w - lr * g / (np.sqrt(s) + eps)
    return w


@pytest.mark.parametrize("decay", ["l2", "decoupled"])
def test_sgd_momentum(decay):
    config = {"type": "sgd", "lr": LR, "momentum": 0.9, "weight_decay": LAMBDA,
              "weight_decay_mode": decay}
    np.testing.assert_allclose(nnspec_weights(config), documented_sgd(0.9, decay), rtol=1e-12)


@pytest.mark.parametrize("decay", ["l2", "decoupled"])
def test_sgd_nesterov(decay):
    config = {"type": "sgd", "lr": LR, "momentum": 0.9, "nesterov": True,
              "weight_decay": LAMBDA, "weight_decay_mode": decay}
    expected = documented_sgd(0.9, decay, nesterov=True)
    np.testing.assert_allclose(nnspec_weights(config), expected, rtol=1e-12)


def test_adam_with_l2():
    config = {"type": "adam", "lr": LR, "weight_decay": LAMBDA}
    np.testing.assert_allclose(nnspec_weights(config), documented_adam(False), rtol=1e-10)


def test_adamw():
    config = {"type": "adamw", "lr": LR, "weight_decay": LAMBDA}
    np.testing.assert_allclose(nnspec_weights(config), documented_adam(True), rtol=1e-10)


@pytest.mark.parametrize(("mu", "decay"), [(0.0, "l2"), (0.5, "l2"), (0.5, "decoupled")])
def test_rmsprop(mu, decay):
    config = {"type": "rmsprop", "lr": LR, "momentum": mu, "weight_decay": LAMBDA,
              "weight_decay_mode": decay}
    np.testing.assert_allclose(nnspec_weights(config), documented_rmsprop(mu, decay),
                               rtol=1e-10)


def lecture_sgd(mu: float, lrs) -> np.ndarray:
    """The lecture's velocity form: v <- mu v - lr (grad + lambda w); w <- w + v."""
    w, v = W0.copy(), np.zeros(3)
    for step in range(SPE * EPOCHS):
        v = mu * v - lrs(step) * (grad(w) + LAMBDA * w)
        w = w + v
    return w


def test_the_lectures_form_agrees_only_at_constant_lr():
    config = {"type": "sgd", "lr": LR, "momentum": 0.9, "weight_decay": LAMBDA}
    constant = nnspec_weights(config, schedule={"type": "constant"})
    np.testing.assert_allclose(constant, lecture_sgd(0.9, lambda t: LR), rtol=1e-12)
    scheduled = nnspec_weights(config)
    assert np.abs(scheduled - lecture_sgd(0.9, documented_lr)).max() > 1e-3
