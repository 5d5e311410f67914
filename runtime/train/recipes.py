"""The training recipes of `train:` (freeze, EMA, best, early stopping) behind the few hooks
the trainer's loop calls: set-up, start of an epoch, after an optimizer step, end of an epoch.

Their state travels in every checkpoint (`state_dict` into the checkpoint's `state`, the EMA
weights as `NAME.ema.safetensors`), so a resumed run continues each of them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnspec.compiler.training_schema import TrainConfig
from nnspec.runtime.train.early_stopping import (
    BestPicker,
    EarlyStopping,
    Monitor,
    check_metrics,
)
from nnspec.runtime.train.ema import ModelEma
from nnspec.runtime.train.freeze import Freezer

EMA = "ema"  # the checkpoint's extra weights of the moving average


@dataclass
class EpochOutcome:
    improved: bool
    """The epoch is the new `best`."""
    stop: bool
    """Early stopping says: no further epochs."""


class Recipes:
    """The recipes `settings` ask for, applied to `model` (the unwrapped module)."""

    def __init__(
        self, model: nn.Module, settings: TrainConfig, metrics: list[str], best: Monitor
    ):
        """`metrics`: what the run records each epoch; `best`: the task's default of
        `train.best`."""
        check_metrics(settings, metrics)
        self.model = model
        self.freezer = Freezer(model, settings.freeze) if settings.freeze else None
        self.ema = ModelEma(model, settings.ema) if settings.ema else None
        self.picker = BestPicker(settings.best, best)
        self.stopper = (
            EarlyStopping(settings.early_stopping, self.picker.metric)
            if settings.early_stopping
            else None
        )
        self.best: dict | None = None
        """The record of the best epoch so far."""
        self.stopped = False

    def start_epoch(self, epoch: int) -> bool:
        """Before epoch `epoch` (from 1): freeze or unfreeze; True when the set of trainable
        parameters changed (a DDP wrapper must then be rebuilt)."""
        return self.freezer.apply(epoch) if self.freezer else False

    def set_train_mode(self, net: nn.Module, epoch: int) -> None:
        net.train()
        if self.freezer:
            self.freezer.set_norms_mode(epoch)

    def after_step(self, step: int) -> None:
        """After optimizer step `step` (from 1)."""
        if self.ema is not None:
            self.ema.update(self.model, step)

    def end_epoch(self, record: dict) -> EpochOutcome:
        """Take the epoch's complete record (validation metrics included)."""
        improved = self.picker.improves(record, self.best)
        if improved:
            self.best = dict(record)
        if self.stopper is not None and self.stopper.update(record):
            self.stopped = True
        return EpochOutcome(improved, self.stopped)

    def extra_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """What checkpoints save beside the model's weights."""
        return {EMA: self.ema.state_dict()} if self.ema is not None else {}

    def state_dict(self) -> dict:
        return {
            "best": self.best,
            "early_stopping": self.stopper.state_dict() if self.stopper else None,
            "stopped_early": self.stopped,
        }

    def load_state_dict(self, state: dict, extra_weights: dict) -> None:
        self.best = state.get("best")
        if self.stopper is not None and state.get("early_stopping"):
            self.stopper.load_state_dict(state["early_stopping"])
        self.stopped = bool(state.get("stopped_early"))
        if self.ema is not None:
            # A run that had no EMA before this session starts averaging from its weights.
            self.ema.load_state_dict(extra_weights.get(EMA, self.model.state_dict()))
