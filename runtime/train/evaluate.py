"""Loss and the task's metrics of a model on a data split, and of a finished run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from nnspec.compiler.errors import UsageError
from nnspec.runtime.train.checkpoint import load_checkpoint
from nnspec.runtime.train.device import autocast_for, prepare_input, resolve_device

TASK_FILE = "task.json"


def run_model(model: nn.Module, x):
    """The model on one batch: `x` is a tensor, or a tuple of tensors for named inputs."""
    return model(*x) if isinstance(x, tuple | list) else model(x)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    device: torch.device,
    task,
    *,
    channels_last: bool = False,
    amp: bool = False,
    amp_dtype: str = "bfloat16",
) -> dict:
    """Mean loss and the task's metrics (torchmetrics) over `loader`, in eval mode. Under
    torch.distributed every rank's samples count, so each rank gets the whole split's figures."""
    was_training = model.training
    model.eval()
    metrics = task.eval_metrics().to(device)
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss x count, count
    for x, y in loader:
        x, y = prepare_input(x, device, channels_last), y.to(device, non_blocking=True)
        task.check_targets(y)
        with autocast_for(device, amp, amp_dtype):
            output = run_model(model, x)
        output = output.float()
        sums[0] += task.eval_loss(output, y).double() * len(y)
        sums[1] += len(y)
        task.update_eval(metrics, output, y)
    model.train(was_training)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(sums)
    loss, count = sums.tolist()
    if count == 0:
        return {"loss": math.nan, task.monitor: math.nan, "count": 0}
    values = {k: v.tolist() if v.ndim else float(v) for k, v in metrics.compute().items()}
    return {"loss": loss / count, **task.finish_metrics(values), "count": int(count)}


def read_task_state(run_dir: Path) -> dict:
    """What the run's task learnt from its data (`task.json`), {} for a run without it."""
    path = Path(run_dir) / TASK_FILE
    return json.loads(path.read_text()).get("state", {}) if path.exists() else {}


def load_trained_model(run_dir: Path, checkpoint: str = "best", device: str = "cpu"):
    """The model of a run directory with `checkpoint`'s weights, the run's normalisation and
    what its task learnt (regression targets: eval outputs in the targets' units).

    Returns (model, spec); the model is in eval mode on `device`.
    """
    from nnspec.compiler import build_model, load_spec
    from nnspec.runtime.train.tasks import make_task

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
    task = make_task(spec, model.graph.output_shape)
    task.restore(read_task_state(run_dir))
    task.prepare_model(model)
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
    from nnspec.compiler.training_schema import TrainConfig
    from nnspec.runtime.train.data import load_spec_data, make_loader
    from nnspec.runtime.train.tasks import make_task

    if split not in ("train", "val", "test"):
        raise UsageError(f"unknown split {split!r}; choose train, val or test")
    target = resolve_device(device)
    model, spec = load_trained_model(run_dir, checkpoint, str(target))
    settings = TrainConfig.model_validate(spec_section(spec.train))
    source = data or settings.data
    output_shape = model.graph.output_shape
    splits = load_spec_data(spec, source, settings, output_shape)
    loader = make_loader(getattr(splits, split), batch_size, train=False)
    task = make_task(spec, output_shape)
    task.restore(read_task_state(run_dir))
    result = evaluate(model, loader, target, task)
    return {"run": str(run_dir), "checkpoint": checkpoint, "data": source, "split": split,
            "task": task.name, **result}  # fmt: skip


def spec_section(value) -> dict:
    """A spec's training section as a dict, whether the spec holds a model, a dict or None."""
    if value is None:
        return {}
    return value.model_dump() if hasattr(value, "model_dump") else dict(value)
