"""Loss and accuracy of a model on a data split, and of a finished run directory."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from nnspec.compiler.errors import UsageError
from nnspec.compiler.training_schema import LossConfig, TrainConfig
from nnspec.runtime.train.checkpoint import load_checkpoint
from nnspec.runtime.train.device import autocast_for, prepare_input, resolve_device


def loss_function(config: LossConfig) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    loss_fn: nn.Module,
    *,
    channels_last: bool = False,
    amp: bool = False,
    amp_dtype: str = "bfloat16",
) -> dict[str, float]:
    """Mean loss, top-1 (and top-5 with more than 5 classes) accuracy over `loader`, in eval
    mode. Under torch.distributed the sums of every rank are added, so each rank gets the
    whole split's figures."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    top5 = False
    for x, y in loader:
        x, y = prepare_input(x, device, channels_last), y.to(device, non_blocking=True)
        with autocast_for(device, amp, amp_dtype):
            logits = model(x)
        logits = logits.float()
        sums[0] += loss_fn(logits, y).double() * len(y)
        sums[1] += (logits.argmax(1) == y).sum()
        if logits.shape[1] > 5:
            top5 = True
            sums[2] += (logits.topk(5, dim=1).indices == y[:, None]).any(1).sum()
        sums[3] += len(y)
    model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    loss, correct, correct5, count = sums.tolist()
    if count == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "count": 0}
    result = {"loss": loss / count, "accuracy": correct / count, "count": int(count)}
    if top5:
        result["top5_accuracy"] = correct5 / count
    return result


def load_trained_model(run_dir: Path, checkpoint: str = "best", device: str = "cpu"):
    """The model of a run directory with `checkpoint`'s weights and the run's normalisation.

    Returns (model, spec); the model is in eval mode on `device`.
    """
    from nnspec.compiler import build_model, load_spec

    run_dir = Path(run_dir)
    spec_path = run_dir / "spec.yaml"
    if not spec_path.exists():
        raise UsageError(
            f"{run_dir} is not a run directory (no spec.yaml)\n    hint: pass the --out "
            "directory of an `nnspec train` run",
        )
    spec = load_spec(spec_path)
    model = build_model(spec)
    model.load_state_dict(load_checkpoint(run_dir / "checkpoints", checkpoint).weights)
    normalization = json.loads((run_dir / "normalization.json").read_text())
    if normalization.get("mean") is not None:
        model.set_normalization(normalization["mean"], normalization["std"])
    return model.to(resolve_device(device)).eval(), spec


def evaluate_run(
    run_dir: Path,
    data: str | None = None,
    split: str = "test",
    checkpoint: str = "best",
    device: str = "auto",
    batch_size: int = 256,
) -> dict:
    """Evaluate a run's checkpoint on a split of its data (or of `data`)."""
    from nnspec.runtime.train.data import load_data, make_loader

    if split not in ("train", "val", "test"):
        raise UsageError(f"unknown split {split!r}; choose train, val or test")
    target = resolve_device(device)
    model, spec = load_trained_model(run_dir, checkpoint, str(target))
    settings = TrainConfig.model_validate(spec_section(spec.train))
    source = data or settings.data
    splits = load_data(source, spec.input.shape, settings.val_fraction, settings.test_fraction)
    loader = make_loader(getattr(splits, split), batch_size, train=False)
    loss_fn = loss_function(LossConfig.model_validate(spec_section(spec.loss)))
    result = evaluate(model, loader, target, loss_fn)
    return {"run": str(run_dir), "checkpoint": checkpoint, "data": source, "split": split, **result}


def spec_section(value) -> dict:
    """A spec's training section as a dict, whether the spec holds a model, a dict or None."""
    if value is None:
        return {}
    return value.model_dump() if hasattr(value, "model_dump") else dict(value)
