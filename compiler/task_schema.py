"""The spec's `task:`: what the model's output means, which fixes the loss, the targets, the
metrics and what predict/serve return.

`task: classification` (the default), or a mapping with `type` and the task's options:

    task: {type: multilabel, threshold: 0.5, pos_weight: 2.0}
    task: {type: regression, loss: huber, huber_delta: 1.0, standardize: true}
    task: {type: segmentation, ignore_index: 255, dice_weight: 0.5}

Owned by the training stage (runtime/train/tasks/ implements each one); the compiler only
validates the options, and `task_check.py` checks that the network's output can serve the task.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassificationTask(_Strict):
    """One class per sample: cross entropy (`loss.label_smoothing`), accuracy and top-5."""

    type: Literal["classification"] = "classification"


class MultilabelTask(_Strict):
    """Any set of labels per sample: multi-hot targets, BCE-with-logits, sigmoid outputs."""

    type: Literal["multilabel"]
    threshold: Probability | list[Probability] = 0.5
    """Probability from which a label counts as present: one value, or one per label."""
    pos_weight: PositiveFloat | list[PositiveFloat] | None = None
    """Weight of the positive examples in the loss (>1 favours recall): one, or per label."""


class RegressionTask(_Strict):
    """Float targets of any per-sample shape (the model's output shape)."""

    type: Literal["regression"]
    loss: Literal["mse", "l1", "huber"] = "mse"
    huber_delta: PositiveFloat = 1.0
    standardize: bool = False
    """Train on (y - mean) / std of the training targets; the model's eval output (and the
    exported graph) is in the targets' own units."""


class SegmentationTask(_Strict):
    """A class per pixel: targets [H, W] of class indices, logits [C, H, W]."""

    type: Literal["segmentation"]
    ignore_index: int | None = 255
    """Target value of pixels that count for nothing (loss and metrics); null: none."""
    dice_weight: NonNegativeFloat = 0.0
    """Add `dice_weight` x the soft Dice loss to the cross entropy (0: cross entropy only)."""


TaskConfig = Annotated[
    ClassificationTask | MultilabelTask | RegressionTask | SegmentationTask,
    Field(discriminator="type"),
]
TASK_NAMES = ("classification", "multilabel", "regression", "segmentation")


def task_from_shorthand(value):
    """`task: regression` means `task: {type: regression}`; an unknown name is refused with
    the known ones."""
    from nnspec.compiler.suggest import did_you_mean

    name = value if isinstance(value, str) else value.get("type") if isinstance(value, dict) \
        else None
    if name is not None and name not in TASK_NAMES:
        raise ValueError(
            f"unknown task {name!r}{did_you_mean(str(name), list(TASK_NAMES))}; "
            f"choose one of {', '.join(TASK_NAMES)}"
        )
    return {"type": value} if isinstance(value, str) else value
