"""`task: classification`: one class per sample. Cross entropy (with the spec's
`loss.label_smoothing`; MixUp/CutMix give soft targets), accuracy and top-5 accuracy."""

from __future__ import annotations

import torch
from torch import nn

from nnspec.runtime.train.tasks.base import Task, target_error


class ClassificationTask(Task):
    name = "classification"
    monitor = "accuracy"
    shown = (("accuracy", "acc", True),)

    def __init__(self, config, output_shape, labels, label_smoothing: float = 0.0):
        super().__init__(config, output_shape, labels)
        self.classes = self.output_shape[0]
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def check_targets(self, target: torch.Tensor) -> None:
        if target.dtype != torch.int64 or target.ndim != 1:
            raise target_error(self.name, f"expected class indices [N] (int64), got "
                               f"{list(target.shape)} {target.dtype}")  # fmt: skip
        if target.numel() and (int(target.min()) < 0 or int(target.max()) >= self.classes):
            raise target_error(self.name, f"class index {int(target.max())} (or "
                               f"{int(target.min())}) is outside 0..{self.classes - 1}, the "
                               "model's outputs")  # fmt: skip

    def loss(self, output, target):
        return self.criterion(output.float(), target)

    def train_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        return MetricCollection({"accuracy": MulticlassAccuracy(self.classes, average="micro")})

    def update_train(self, metrics, output, target):
        # MixUp/CutMix targets are class probabilities: count the dominant class
        metrics.update(output.detach(), target.argmax(1) if target.ndim == 2 else target)

    def eval_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MulticlassAccuracy

        metrics = {"accuracy": MulticlassAccuracy(self.classes, average="micro")}
        if self.classes > 5:
            metrics["top5_accuracy"] = MulticlassAccuracy(self.classes, top_k=5, average="micro")
        return MetricCollection(metrics)
