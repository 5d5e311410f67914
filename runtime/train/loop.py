"""One training epoch: batches through the model, the task's loss (plus training-only heads),
the optimizer step (with AMP's gradient scaler and clipping), and the epoch's figures."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nnspec.runtime.train.device import autocast_for, prepare_input
from nnspec.runtime.train.evaluate import run_model
from nnspec.runtime.train.optim import momentum_of
from nnspec.runtime.train.progress import ProgressBar


def training_loss(
    output, target: torch.Tensor, loss_fn: Callable, head_weights: dict
) -> torch.Tensor:
    """The loss of a model's training-mode output: `logits`, or `(logits, {head: logits})`
    for a spec with training-only heads, whose losses add with their weights."""
    logits, heads = output if isinstance(output, tuple) else (output, {})
    loss = loss_fn(logits.float(), target)
    for head, head_logits in heads.items():
        loss = loss + head_weights[head] * loss_fn(head_logits.float(), target)
    return loss


@dataclass
class EpochLoop:
    """What an epoch needs, set up once per run by the trainer.

    `checked_loss(loss, epoch, batch, state)` returns the loss as a float (averaged over
    ranks) or raises when it is not finite; `mixer` is the batch-level MixUp/CutMix, if any.
    """

    net: nn.Module
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loader: object
    schedule: object
    scaler: object | None
    task: object
    settings: object
    device: torch.device
    amp: bool
    ctx: object
    mixer: Callable | None
    progress: bool
    checked_loss: Callable

    def run(self, epoch: int, state: dict) -> dict:
        """Train one epoch; returns its record (loss, the task's training metrics, lr, speed)."""
        settings, ctx, task = self.settings, self.ctx, self.task
        self.loader.sampler.set_epoch(epoch)
        self.net.train()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss x count, count
        metrics = task.train_metrics().to(self.device)
        heads = getattr(self.model, "head_loss_weights", {}) or {}
        bar = ProgressBar(len(self.loader), f"epoch {epoch + 1}/{settings.epochs}", self.progress)
        started = time.perf_counter()
        for batch, (x, y) in enumerate(self.loader):
            task.check_targets(y)
            if self.mixer is not None:
                x, y = self.mixer(x, y, epoch, batch)
            self.schedule.apply(self.optimizer, state["step"])
            x = prepare_input(x, self.device, settings.channels_last)
            y = y.to(self.device, non_blocking=True)
            with autocast_for(self.device, self.amp, settings.amp_dtype):
                output = run_model(self.net, x)
            loss = training_loss(output, y, task.loss, heads)
            value = self.checked_loss(loss, epoch, batch, state)
            self.step(loss)
            state["step"] += 1
            sums += torch.stack([loss.detach().double() * len(y),
                                 torch.tensor(float(len(y)), dtype=torch.float64,
                                              device=self.device)])  # fmt: skip
            task.update_train(metrics, output[0] if isinstance(output, tuple) else output, y)
            bar.update(1, f"loss {value:.4f}")
        bar.close()
        ctx.sync_buffers(self.model)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - started
        loss_sum, count = ctx.sum(sums).tolist()
        group = self.optimizer.param_groups[0]
        computed = {f"train_{k}": float(v) for k, v in metrics.compute().items()} if count else {}
        return {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": loss_sum / count if count else float("nan"),
            **computed,
            "lr": group["lr"],
            "momentum": momentum_of(group),
            "images_per_second": count / seconds,
            "epoch_seconds": seconds,
        }

    def step(self, loss: torch.Tensor) -> None:
        """Backward and one optimizer step (through the gradient scaler under float16 AMP)."""
        optimizer, scaler = self.optimizer, self.scaler
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            self.clip()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            self.clip()
            optimizer.step()

    def clip(self) -> None:
        if self.settings.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
