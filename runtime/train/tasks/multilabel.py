"""`task: multilabel`: any set of labels per sample. Multi-hot targets [N, L], BCE-with-logits
(optional `pos_weight`), sigmoid outputs with a per-label `threshold`; metrics micro/macro F1
at those thresholds and mAP (macro average precision, threshold-free)."""

from __future__ import annotations

import torch
from torch import nn

from nnspec.runtime.train.tasks.base import Task, target_error


def per_label(value, count: int) -> list[float] | None:
    """A scalar or per-label list as one value per label (None stays None)."""
    if value is None:
        return None
    return [float(v) for v in value] if isinstance(value, list) else [float(value)] * count


class MultilabelTask(Task):
    name = "multilabel"
    monitor = "map"
    shown = (("f1_micro", "F1", False), ("map", "mAP", False))

    def __init__(self, config, output_shape, labels):
        super().__init__(config, output_shape, labels)
        self.count = self.output_shape[0]
        self.thresholds = per_label(config.threshold, self.count)
        pos_weight = per_label(config.pos_weight, self.count)
        self.criterion = nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(pos_weight) if pos_weight is not None else None
        )

    def check_targets(self, target):
        if target.ndim != 2 or target.shape[1] != self.count:
            raise target_error(self.name, f"expected multi-hot [N, {self.count}], got "
                               f"{list(target.shape)}")  # fmt: skip
        if not bool(((target == 0) | (target == 1)).all()):
            raise target_error(self.name, "values must be 0 or 1 (label absent / present)")

    def loss(self, output, target):
        if self.criterion.pos_weight is not None and \
                self.criterion.pos_weight.device != output.device:
            self.criterion.to(output.device)
        return self.criterion(output.float(), target.float())

    def _decisions(self, output: torch.Tensor) -> torch.Tensor:
        thresholds = torch.tensor(self.thresholds, device=output.device)
        return (torch.sigmoid(output.detach().float()) >= thresholds).long()

    def train_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MultilabelF1Score

        return MetricCollection({"f1_micro": MultilabelF1Score(self.count, average="micro")})

    def update_train(self, metrics, output, target):
        metrics.update(self._decisions(output), target.long())

    def eval_metrics(self):
        from torchmetrics import MetricCollection
        from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score

        # updated one by one: the F1 scores take decisions, average precision probabilities
        return MetricCollection({
            "f1_micro": MultilabelF1Score(self.count, average="micro"),
            "f1_macro": MultilabelF1Score(self.count, average="macro"),
            "map": MultilabelAveragePrecision(self.count, average="macro"),
        }, compute_groups=False)  # fmt: skip

    def update_eval(self, metrics, output, target):
        decisions, target = self._decisions(output), target.long()
        metrics["f1_micro"].update(decisions, target)
        metrics["f1_macro"].update(decisions, target)
        metrics["map"].update(torch.sigmoid(output.float()), target)

    def metadata(self) -> dict:
        return {"type": self.name, "thresholds": self.thresholds}
