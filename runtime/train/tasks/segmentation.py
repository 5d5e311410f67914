"""`task: segmentation`: a class per pixel. Targets [N, H, W] of class indices (`ignore_index`
for pixels that count for nothing), logits [N, C, H, W]; cross entropy (the spec's
`loss.label_smoothing`) plus `dice_weight` x soft Dice; metrics pixel accuracy and mean IoU
(over the classes present in the targets or the predictions)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nnspec.runtime.train.tasks.base import Task, target_error


class SegmentationTask(Task):
    name = "segmentation"
    monitor = "mean_iou"
    shown = (("pixel_accuracy", "pixel acc", True), ("mean_iou", "mIoU", False))

    def __init__(self, config, output_shape, labels, label_smoothing: float = 0.0):
        super().__init__(config, output_shape, labels)
        self.classes = self.output_shape[0]
        self.ignore = config.ignore_index
        self.criterion = nn.CrossEntropyLoss(
            ignore_index=self.ignore if self.ignore is not None else -100,
            label_smoothing=label_smoothing,
        )

    def check_targets(self, target):
        if target.dtype != torch.int64 or tuple(target.shape[1:]) != self.output_shape[1:]:
            raise target_error(self.name, f"expected class maps [N, "
                               f"{', '.join(map(str, self.output_shape[1:]))}] (int64), got "
                               f"{list(target.shape)} {target.dtype}")  # fmt: skip
        valid = target if self.ignore is None else target[target != self.ignore]
        if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= self.classes):
            ignored = f" (ignore_index {self.ignore})" if self.ignore is not None else ""
            raise target_error(self.name, f"pixel value {int(valid.max())} is not one of the "
                               f"model's {self.classes} classes{ignored}")  # fmt: skip

    def loss(self, output, target):
        output = output.float()
        loss = self.criterion(output, target)
        if self.config.dice_weight:
            loss = loss + self.config.dice_weight * self.dice_loss(output, target)
        return loss

    def dice_loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """1 - the soft Dice coefficient, per class over the batch, averaged over the classes;
        ignored pixels count for nothing."""
        probabilities = logits.softmax(1)
        valid = torch.ones_like(target, dtype=torch.bool) if self.ignore is None else \
            target != self.ignore
        one_hot = F.one_hot(torch.where(valid, target, 0), self.classes).movedim(-1, 1)
        weight = valid.unsqueeze(1).to(probabilities.dtype)
        dims = (0, *range(2, logits.ndim))
        overlap = (probabilities * one_hot * weight).sum(dims)
        total = ((probabilities + one_hot) * weight).sum(dims)
        return 1 - ((2 * overlap + 1.0) / (total + 1.0)).mean()

    def train_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return MetricCollection({"pixel_accuracy": self._pixel_accuracy(MulticlassAccuracy)})

    def update_train(self, metrics, output, target):
        metrics.update(output.detach(), target)

    def _pixel_accuracy(self, cls):
        return cls(self.classes, average="micro", multidim_average="global",
                   ignore_index=self.ignore)  # fmt: skip

    def eval_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        return MetricCollection({
            "pixel_accuracy": self._pixel_accuracy(MulticlassAccuracy),
            # per class, NaN where a class is in neither targets nor predictions
            "iou": MulticlassJaccardIndex(self.classes, average="none", ignore_index=self.ignore,
                                          zero_division=math.nan),
        }, compute_groups=False)  # fmt: skip

    def eval_metric_names(self) -> list[str]:
        return ["pixel_accuracy", "mean_iou"]

    def finish_metrics(self, values):
        per_class = values.pop("iou")
        present = [v for v in per_class if v == v]
        values["mean_iou"] = sum(present) / len(present) if present else math.nan
        return values

    def metadata(self) -> dict:
        return {"type": self.name, "ignore_index": self.ignore, "classes": self.classes}
