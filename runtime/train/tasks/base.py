"""The Task interface: what a spec's `task:` means to training, evaluation and export.

A task owns its target format (and checks batches against it), its loss, its metrics (from
torchmetrics), how the network's output must fit the data, which validation metric picks the
`best` checkpoint, and the record the run and the exported model carry. The trainer, the
evaluator and the exporter call these methods and never ask which task they hold.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from nnspec.compiler.errors import DataError, SpecError


class Task:
    """Base class; one subclass per task in its own module, named in `TASKS`."""

    name: ClassVar[str]
    #: the validation metric that picks `best` (ties: lower validation loss)
    monitor: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    #: how the epoch line shows metrics: (key, label, as a percentage)
    shown: ClassVar[tuple[tuple[str, str, bool], ...]] = ()

    def __init__(self, config, output_shape: tuple[int, ...], labels: list[str] | None):
        self.config = config
        self.output_shape = tuple(output_shape)
        self.labels = list(labels) if labels else None

    # ------------------------------------------------------------------ data
    def check_data(self, graph, splits) -> None:
        """Raise a located SpecError when the network's output cannot serve the data."""
        from nnspec.compiler.task_check import output_task_problems

        count = splits.num_classes
        if splits.classes_inferred and count is not None and count <= graph.output_shape[0]:
            count = None  # counted from the largest index: fewer classes than outputs may be fine
        problems = output_task_problems(graph, count, splits.source)
        if problems:
            raise SpecError(problems)

    def check_targets(self, target: torch.Tensor) -> None:
        """Raise DataError when a batch of targets does not have the task's format."""

    def fit(self, splits) -> dict:
        """Statistics the task learns from the training split (kept in the run); {} if none."""
        return {}

    def restore(self, state: dict) -> None:
        """Take back what `fit` returned (resume, evaluation, export)."""

    def prepare_model(self, model: nn.Module) -> None:
        """Give the model what the task learnt (e.g. the output's target units)."""

    # ------------------------------------------------------------------ training
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of a training-mode output."""
        raise NotImplementedError

    def eval_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of an eval-mode output (the same as `loss` unless eval outputs differ)."""
        return self.loss(output, target)

    def train_metrics(self):
        """Metrics cheap enough to follow during training (a torchmetrics MetricCollection)."""
        from torchmetrics import MetricCollection

        return MetricCollection({})

    def update_train(self, metrics, output: torch.Tensor, target: torch.Tensor) -> None:
        metrics.update(output, target)

    def eval_metrics(self):
        """The metrics of validation and test (a torchmetrics MetricCollection)."""
        raise NotImplementedError

    def update_eval(self, metrics, output: torch.Tensor, target: torch.Tensor) -> None:
        metrics.update(output, target)

    def finish_metrics(self, values: dict[str, float]) -> dict[str, float]:
        """Final touches on computed metrics (e.g. a mean over the classes present)."""
        return values

    def train_metric_names(self) -> list[str]:
        """The keys `train_metrics` computes (each epoch's record has `train_<key>`)."""
        return list(self.train_metrics().keys())

    def eval_metric_names(self) -> list[str]:
        """The keys `evaluate` returns besides `loss` (records have `val_<key>`)."""
        return list(self.eval_metrics().keys())

    # ------------------------------------------------------------------ records
    def metadata(self) -> dict:
        """The task's entry in the run and in the exported model's `nnspec.task` record."""
        return {"type": self.name}

    def better(self, score: float, best: float) -> bool:
        if score != score:  # NaN never improves
            return False
        return score > best if self.higher_is_better else score < best

    @property
    def worst(self) -> float:
        return -float("inf") if self.higher_is_better else float("inf")

    def describe(self, metrics: dict, prefix: str) -> str:
        """`acc 97.21%` / `mIoU 0.812` for the epoch line, from `{prefix}{key}` entries."""
        parts = []
        for key, label, percent in self.shown:
            value = metrics.get(prefix + key)
            if value is not None:
                parts.append(f"{label} {100 * value:.2f}%" if percent else f"{label} {value:.4f}")
        return " ".join(parts)


def target_error(task: str, message: str) -> DataError:
    return DataError(f"{task} targets: {message}\n    hint: see docs/data.md for each task's "
                     "target format")  # fmt: skip
