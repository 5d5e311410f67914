"""`train.freeze`: parameters that do not train (a pretrained backbone), optionally until an
epoch.

Frozen parameters get `requires_grad = False`, so they have no gradient: torch's optimizers
skip them (no update, no weight decay, no momentum), while they stay in the optimizer's
parameter groups. Unfreezing only flips the flag back, so the optimizer and its checkpointed
state keep one layout for the whole run and a resumed run needs nothing else. Batch norms whose
parameters are all frozen run in eval mode while frozen: their running statistics stay those
of the pretrained weights instead of drifting to the new data's small batches.
"""

from __future__ import annotations

from torch import nn

from nnspec.compiler.errors import Problem, SpecError
from nnspec.compiler.suggest import did_you_mean
from nnspec.compiler.training_schema import FreezeConfig
from nnspec.runtime.train.optim import matches_id


class Freezer:
    """`train.freeze` applied to one model."""

    def __init__(self, model: nn.Module, config: FreezeConfig):
        self.model, self.config = model, config
        names = [name for name, _ in model.named_parameters()]
        _check_patterns(config, names, [name for name, _ in model.named_modules() if name])
        self.frozen = [p for n, p in model.named_parameters() if matches_id(n, config.params)]
        if len(self.frozen) == len(names) and config.unfreeze_at_epoch is None:
            raise SpecError(
                Problem(
                    "freezes every parameter of the model: nothing would train",
                    path="train.freeze.params",
                    hint="freeze the backbone only (e.g. ['stage*']), or set unfreeze_at_epoch",
                )
            )
        frozen_ids = {id(p) for p in self.frozen}
        self.norms = [
            m
            for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (
                all(id(p) in frozen_ids for p in m.parameters())
                if any(True for _ in m.parameters())
                else matches_id(name, config.params)
            )
        ]
        self.names = [n for n in names if matches_id(n, config.params)]

    def describe(self) -> str:
        """`freezing 3 of 8 tensors (stem, bn) until epoch 2`, for the log."""
        until = self.config.unfreeze_at_epoch
        return (
            f"freezing {len(self.frozen)} of {sum(1 for _ in self.model.parameters())} "
            f"parameter tensors ({', '.join(self.config.params)})"
            + (f" until epoch {until}" if until else "")
            + (f"; {len(self.norms)} batch norms in eval mode while frozen" if self.norms else "")
        )

    def frozen_in(self, epoch: int) -> bool:
        """Whether the frozen parameters are frozen in epoch `epoch` (counted from 1)."""
        until = self.config.unfreeze_at_epoch
        return until is None or epoch < until

    def apply(self, epoch: int) -> bool:
        """Set the parameters' `requires_grad` for epoch `epoch` (from 1); True if it changed."""
        trainable = not self.frozen_in(epoch)
        changed = any(p.requires_grad != trainable for p in self.frozen)
        for param in self.frozen:
            param.requires_grad_(trainable)
        return changed

    def set_norms_mode(self, epoch: int) -> None:
        """After `model.train()`: frozen batch norms back to eval mode while they are frozen."""
        if self.frozen_in(epoch):
            for module in self.norms:
                module.eval()


def _check_patterns(config: FreezeConfig, params: list[str], modules: list[str]) -> None:
    problems = []
    for index, pattern in enumerate(config.params):
        if not any(matches_id(name, [pattern]) for name in params + modules):
            problems.append(
                Problem(
                    f"{pattern!r} matches no parameter or module id"
                    + did_you_mean(pattern, modules + params),
                    path=f"train.freeze.params[{index}]",
                    hint="patterns are globs on ids as `nnspec summary` lists them, e.g. "
                    "'stage1' or 'stage*'",
                )
            )
    if problems:
        raise SpecError(problems)
