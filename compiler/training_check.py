"""Training sections that contradict each other (each section is valid alone): located
problems, collected, found when the spec loads rather than mid-run.

- two schedules for one momentum: `schedule.momentum: sutskever` with `one_cycle`'s
  `cycle_momentum`;
- `optimizer.type: lbfgs` with what torch.optim.LBFGS cannot honour: weight decay, `no_decay`
  and `groups` (it takes one parameter group and has no decay), momentum schedules (it has no
  momentum), mixed precision, gradient accumulation and clipping (its closure recomputes the
  batch's float32 loss and true gradient several times per step).
"""

from __future__ import annotations

from nnspec.compiler.errors import Problem
from nnspec.compiler.task_check import spec_problem
from nnspec.compiler.training_schema import OneCycleLR, SutskeverMomentum

LBFGS_HINT = ("L-BFGS (one parameter group, a closure that re-evaluates each batch's loss) "
              "cannot honour it: drop it, or use type: sgd or adam")


def spec_training_problems(spec) -> list[Problem]:
    """Problems between `optimizer`, `schedule` and `train` (see the module docstring)."""
    problems: list[Problem] = []
    schedule = spec.schedule
    lr = schedule.lr if schedule is not None else None
    cycles = isinstance(lr, OneCycleLR) and lr.cycle_momentum
    if cycles and isinstance(schedule.momentum, SutskeverMomentum):
        problems.append(spec_problem(
            spec, ("schedule", "momentum"), "two schedules set the momentum: "
            "`sutskever` here and one_cycle's `cycle_momentum` (on by default, as in torch)",
            hint="set schedule.lr.cycle_momentum: false, or drop schedule.momentum"))
    optimizer = spec.optimizer
    if optimizer is not None and optimizer.type == "lbfgs":
        problems += _lbfgs_problems(spec, cycles)
    return problems


def _lbfgs_problems(spec, cycles: bool) -> list[Problem]:
    optimizer, schedule, train = spec.optimizer, spec.schedule, spec.train
    found: list[tuple[tuple, str]] = []
    if optimizer.weight_decay:
        found.append((("optimizer", "weight_decay"), "torch's LBFGS has no weight decay"))
    for name in ("no_decay", "groups"):
        if getattr(optimizer, name):
            found.append((("optimizer", name), "torch's LBFGS takes one parameter group "
                          f"with one setting for all, so `{name}` cannot apply"))
    if schedule is not None and isinstance(schedule.momentum, SutskeverMomentum):
        found.append((("schedule", "momentum"), "LBFGS has no momentum to schedule"))
    if cycles:
        found.append((("schedule", "lr", "cycle_momentum"),
                      "LBFGS has no momentum for one_cycle to cycle (set it to false)"))
    if train is not None and train.amp:
        found.append((("train", "amp"), "LBFGS's line search and curvature pairs need float32 "
                      "losses and gradients: mixed precision is not supported"))
    if train is not None and train.grad_clip is not None:
        found.append((("train", "grad_clip"), "LBFGS's line search needs the true gradient "
                      "of the loss it evaluates: gradients cannot be clipped"))
    if train is not None and train.accumulate > 1:
        found.append((("train", "accumulate"), "LBFGS re-evaluates the loss inside its step, "
                      "so gradients cannot be accumulated over batches: use a larger "
                      "batch_size instead"))
    return [spec_problem(spec, path, f"{message} (optimizer.type: lbfgs)", hint=LBFGS_HINT)
            for path, message in found]
