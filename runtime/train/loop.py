"""One training epoch: batches, the task's loss (plus training-only heads), optimizer steps
over `train.accumulate` batches each, and the epoch's record (loss and the task's training
metrics). The session set-up, checkpoints and the run's end are trainer.py's.

LBFGS steps once per batch through `closure_step` (its closure re-evaluates the batch's loss).

Gradient accumulation: an optimizer step follows every `accumulate` batches, each batch's loss
divided by the number of batches in its group, so that (without batch norm, whose statistics
see each batch alone) `batch_size: b, accumulate: N` takes the same steps as
`batch_size: b*N`, up to float summation order. Schedules, EMA and `step` count optimizer
steps. Under DDP only a group's last backward all-reduces gradients (`no_sync`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnspec.compiler.errors import TrainingError
from nnspec.compiler.training_schema import TrainConfig
from nnspec.runtime.train.checkpoint import checkpoint_exists
from nnspec.runtime.train.device import autocast_for, prepare_input
from nnspec.runtime.train.distributed import Distributed
from nnspec.runtime.train.evaluate import run_model
from nnspec.runtime.train.optim import momentum_of
from nnspec.runtime.train.progress import ProgressBar
from nnspec.runtime.train.recipes import Recipes
from nnspec.runtime.train.schedules import Schedule


@dataclass
class Session:
    """What the steps of one training session share."""

    model: nn.Module
    """The unwrapped model (checkpoints, EMA, clipping); the loop calls its wrapper `net`."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedule: Schedule
    recipes: Recipes
    state: dict
    """epoch, step, best_epoch, train_seconds and the recipes' state: what checkpoints keep."""
    settings: TrainConfig
    device: torch.device
    ctx: Distributed
    task: object
    """The spec's Task (runtime/train/tasks/): target checks, loss, training metrics."""
    amp: bool
    checkpoints: Path
    tracking: object | None = None
    """The TrackingSession (rank 0 only)."""
    mixer: Callable | None = None
    """MixUp/CutMix on whole batches (augment.BatchMixer), if `train.augment` has them."""


def train_epoch(run: Session, epoch: int, net: nn.Module, loader, progress: bool) -> dict:
    """One epoch (from 1); returns its record (train loss, the task's training metrics, lr,
    speed)."""
    settings, ctx, state, optimizer, device = (
        run.settings, run.ctx, run.state, run.optimizer, run.device
    )
    loader.sampler.set_epoch(epoch - 1)
    run.recipes.set_train_mode(net, epoch)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss x count, count
    metrics = run.task.train_metrics().to(device)
    heads = getattr(run.model, "head_loss_weights", {}) or {}
    bar = ProgressBar(len(loader), f"epoch {epoch}/{settings.epochs}", progress)
    started = time.perf_counter()
    batches, accumulate = len(loader), settings.accumulate
    for batch, (x, y) in enumerate(loader):
        first = batch - batch % accumulate
        group = min(accumulate, batches - first)  # the epoch's last group may be short
        stepping = batch - first == group - 1
        if batch == first:
            run.schedule.apply(optimizer, state["step"])
            optimizer.zero_grad(set_to_none=True)
        run.task.check_targets(y)
        if run.mixer is not None:
            x, y = run.mixer(x, y, epoch - 1, batch)
        x = prepare_input(x, device, settings.channels_last)
        y = y.to(device, non_blocking=True)
        if isinstance(optimizer, torch.optim.LBFGS):
            loss, logits, value = closure_step(run, net, x, y, (epoch, batch))
        else:
            sync = contextlib.nullcontext() if stepping or not ctx.active else net.no_sync()
            with sync:
                with autocast_for(device, run.amp, settings.amp_dtype):
                    output = run_model(net, x)
                logits = output[0] if isinstance(output, tuple) else output
                loss = training_loss(output, y, run.task.loss, heads)
                value = checked_loss(run, loss, epoch, batch)
                scaled = loss / group if group > 1 else loss
                (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
            if stepping:
                optimizer_step(run)
        sums += torch.stack(
            [
                loss.detach().double() * len(y),
                torch.tensor(float(len(y)), dtype=torch.float64, device=device),
            ]
        )
        run.task.update_train(metrics, logits, y)
        bar.update(1, f"loss {value:.4f}")
    bar.close()
    ctx.sync_buffers(run.model)
    if run.recipes.ema is not None:
        ctx.sync_buffers(run.recipes.ema.module)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    loss_sum, count = ctx.sum(sums).tolist()
    group = optimizer.param_groups[0]
    computed = {f"train_{k}": float(v) for k, v in metrics.compute().items()} if count else {}
    return {
        "epoch": epoch,
        "step": state["step"],
        "train_loss": loss_sum / count if count else math.nan,
        **computed,
        "lr": group["lr"],
        "momentum": momentum_of(group),
        "images_per_second": count / seconds,
        "epoch_seconds": seconds,
    }


def optimizer_step(run: Session) -> None:
    """The step after a group's gradients are in: unscale (AMP), clip, step, then the
    recipes' after-step hook (EMA)."""
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)
    if run.settings.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.settings.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.state["step"] += 1
    run.recipes.after_step(run.state["step"])


def closure_step(run: Session, net: nn.Module, x, y, where: tuple[int, int]):
    """One step of an optimizer that evaluates the loss itself (torch.optim.LBFGS: several
    evaluations per step, for its iterations and line search): the closure zero-grads,
    recomputes this batch's loss and backprops. The first evaluation, at the weights before the
    step, is the batch's record, as it is for the other optimizers. Returns (loss, logits, loss
    as a float) of that evaluation."""
    heads = getattr(run.model, "head_loss_weights", {}) or {}
    first: list = []

    def closure() -> torch.Tensor:
        run.optimizer.zero_grad(set_to_none=True)
        output = run_model(net, x)
        loss = training_loss(output, y, run.task.loss, heads)
        if not first:
            logits = output[0] if isinstance(output, tuple) else output
            first.append((loss.detach(), logits.detach(), checked_loss(run, loss, *where)))
        loss.backward()
        return loss

    run.optimizer.step(closure)
    run.state["step"] += 1
    run.recipes.after_step(run.state["step"])
    return first[0]


def checked_loss(run: Session, loss: torch.Tensor, epoch: int, batch: int) -> float:
    """The loss (mean over ranks) as a float; a TrainingError on every rank if any rank's is
    not finite."""
    value = loss.detach().float()
    if run.ctx.active:
        value = run.ctx.sum(value.clone().reshape(1))[0] / run.ctx.world_size
    value = value.item()
    if math.isfinite(value):
        return value
    state = run.state
    if checkpoint_exists(run.checkpoints, "last"):
        kept = f"the last good checkpoint, after epoch {state['epoch']}, is kept in {run.checkpoints}"
    else:
        kept = "no checkpoint had been written yet"
    raise TrainingError(
        f"the loss became {value} at step {state['step']} (epoch {epoch}, batch "
        f"{batch + 1}); training stopped, {kept}\n    hint: lower optimizer.lr (it was "
        f"{run.optimizer.param_groups[0]['lr']:.4g}), normalise the inputs (normalize: auto), "
        "or clip gradients (train.grad_clip)",
    )


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


def metric_names(task, settings: TrainConfig) -> list[str]:
    """What each epoch's record holds (what `train.best` and early stopping may watch)."""
    val = ["loss", *task.eval_metric_names()]
    splits = ["val_", *(["val_ema_"] if settings.ema else [])]
    return [
        "train_loss",
        *(f"train_{m}" for m in task.train_metric_names()),
        *(split + m for split in splits for m in val),
        "lr",
        "momentum",
        "images_per_second",
        "epoch_seconds",
    ]
