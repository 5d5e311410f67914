"""`train.ema`: an exponential moving average of the weights, with timm's ModelEmaV3 rule.

After optimizer step t (counted from 1) every floating-point tensor of the state_dict
(parameters and batch-norm statistics) moves as `ema = decay_t * ema + (1 - decay_t) * w`;
integer buffers (`num_batches_tracked`) are copied. `decay_t` is 0 at the first step (the
average starts from the trained weights, not from the initialisation), then `decay`, or with
`warmup` `min(decay, 1 - (1 + t')^-power)` where `t' = t - 1`. The averaged copy lives beside
the model on its device, is evaluated on the validation split each epoch, and is saved with
every checkpoint (`NAME.ema.safetensors`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from nnspec.compiler.training_schema import EmaConfig


class ModelEma:
    """The averaged copy of a model (`module`, always in eval mode and without gradients)."""

    def __init__(self, model: nn.Module, config: EmaConfig):
        self.config = config
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay used by the update after optimizer step `step` (from 1)."""
        t = step - 1
        if t <= 0:
            return 0.0
        if not self.config.warmup:
            return self.config.decay
        return min(self.config.decay, 1.0 - (1.0 + t) ** -self.config.warmup_power)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average `model` (the unwrapped module, not a DDP or compiled wrapper) in."""
        weight = 1.0 - self.decay_at(step)
        averaged, current = [], []
        for mine, theirs in zip(
            self.module.state_dict().values(), model.state_dict().values(), strict=True
        ):
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(theirs.to(mine.dtype))
            else:
                mine.copy_(theirs)
        if averaged:
            torch._foreach_lerp_(averaged, current, weight)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
