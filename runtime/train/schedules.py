"""Learning-rate and momentum schedules, per optimizer step.

Every schedule is a pure function of the global step (counted from 0), so a resumed run needs
only the step to continue exactly where it stopped: there is no scheduler state to save.
"""

from __future__ import annotations

import math
from bisect import bisect_right

import torch

from nnspec.compiler.training_schema import (
    ConstantLR,
    CosineLR,
    ExponentialLR,
    MultiStepLR,
    OneCycleLR,
    ScheduleConfig,
    StepLR,
    SutskeverMomentum,
)
from nnspec.runtime.train.optim import set_momentum


def sutskever_momentum(step: int, max_momentum: float, period: int = 250) -> float:
    """Sutskever et al. (2013): mu_t = min(1 - 2^(-1 - log2(floor(t / period) + 1)), mu_max)."""
    return min(1.0 - 2.0 ** (-1.0 - math.log2(step // period + 1)), max_momentum)


class Schedule:
    """The spec's `schedule` section laid out over `epochs * steps_per_epoch` steps.

    A linear warmup (`warmup_epochs`) takes the first steps; the lr schedule proper runs over the
    steps left, so a cosine still ends at `min_lr` on the last step.
    """

    def __init__(self, config: ScheduleConfig, steps_per_epoch: int, epochs: int):
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = steps_per_epoch * epochs
        self.warmup_steps = min(
            round(config.lr.warmup_epochs * steps_per_epoch), max(self.total_steps - 1, 0)
        )
        self.main_steps = max(self.total_steps - self.warmup_steps, 1)

    def lr_at(self, step: int, base_lr: float) -> float:
        """The lr at `step` of a param group whose configured lr is `base_lr`."""
        if step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        return self._main_lr(min(step - self.warmup_steps, self.main_steps - 1), base_lr)

    def momentum_at(self, step: int) -> float | None:
        """The scheduled momentum at `step`, or None when the optimizer's own value stays."""
        momentum, lr = self.config.momentum, self.config.lr
        if isinstance(momentum, SutskeverMomentum):
            return sutskever_momentum(step, momentum.max, momentum.period)
        if isinstance(lr, OneCycleLR) and lr.cycle_momentum:
            if step < self.warmup_steps:  # the cycle's first value until it starts
                return lr.max_momentum
            main = min(step - self.warmup_steps, self.main_steps - 1)
            phase, pct = one_cycle_phase(main, self.main_steps, lr.pct_start)
            low, high = lr.base_momentum, lr.max_momentum
            return _cosine_between(*((high, low) if phase == 0 else (low, high)), pct)
        return None

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Set every param group's lr (and momentum, if scheduled) for `step`."""
        momentum = self.momentum_at(step)
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(step, group["initial_lr"])
            if momentum is not None:
                set_momentum(group, momentum)

    def _main_lr(self, step: int, base: float) -> float:
        lr = self.config.lr
        spe = self.steps_per_epoch
        if isinstance(lr, ConstantLR):
            return base
        if isinstance(lr, StepLR):
            return base * lr.gamma ** (step // (lr.step_epochs * spe))
        if isinstance(lr, ExponentialLR):
            return base * lr.gamma ** (step // spe)
        if isinstance(lr, MultiStepLR):
            return base * lr.gamma ** bisect_right([m * spe for m in lr.milestones], step)
        if isinstance(lr, CosineLR):
            progress = step / max(self.main_steps - 1, 1)
            return lr.min_lr + (base - lr.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        if isinstance(lr, OneCycleLR):
            return _one_cycle(step, self.main_steps, base, lr)
        raise TypeError(f"unhandled lr schedule {lr!r}")


def _one_cycle(step: int, total: int, peak: float, cfg: OneCycleLR) -> float:
    """torch.optim.lr_scheduler.OneCycleLR's two-phase cosine policy, as a closed form."""
    start = peak / cfg.div_factor
    end = start / cfg.final_div_factor
    phase, pct = one_cycle_phase(step, total, cfg.pct_start)
    return _cosine_between(*((start, peak) if phase == 0 else (peak, end)), pct)


def one_cycle_phase(step: int, total: int, pct_start: float) -> tuple[int, float]:
    """Which phase of torch's OneCycleLR (0: rise, 1: fall) `step` is in, and how far through
    it (0 to 1), as torch computes them: the rise ends at step `pct_start * total - 1`, which
    may be negative for very short runs (then every step falls: a 1-step run is at the final
    lr). Where torch divides 0 by 0 (`pct_start * total == 1` exactly, at step 0), the rise has
    no length and step 0 is its end, the peak."""
    rise_end = float(pct_start * total) - 1
    if step <= rise_end:
        return 0, step / rise_end if rise_end else 1.0
    return 1, (step - rise_end) / (total - 1 - rise_end)


def _cosine_between(start: float, end: float, fraction: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)
