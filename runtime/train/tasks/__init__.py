"""Tasks: what a spec's `task:` means to training, evaluation and export (see base.Task).

One module per task, one entry in `TASKS`; `make_task(spec, output_shape)` builds the spec's.
"""

from __future__ import annotations

from nnspec.runtime.train.tasks.base import Task
from nnspec.runtime.train.tasks.classification import ClassificationTask
from nnspec.runtime.train.tasks.multilabel import MultilabelTask
from nnspec.runtime.train.tasks.regression import RegressionTask
from nnspec.runtime.train.tasks.segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "multilabel": MultilabelTask,
    "regression": RegressionTask,
    "segmentation": SegmentationTask,
}

__all__ = ["TASKS", "Task", "make_task"]


def make_task(spec, output_shape=None) -> Task:
    """The Task of a spec (its `task:`, labels, and `loss:` for the cross-entropy tasks).

    Args:
        output_shape: the model's per-sample output shape (compiled from the spec if None).
    """
    from nnspec.compiler.training_schema import LossConfig

    if output_shape is None:
        from nnspec.compiler import compile_graph

        output_shape = compile_graph(spec).output_shape
    config = spec.task
    cls = TASKS[config.type]
    labels = list(spec.labels) if spec.labels else None
    if cls in (ClassificationTask, SegmentationTask):
        loss = spec.loss if spec.loss is not None else LossConfig()
        if isinstance(loss, dict):
            loss = LossConfig.model_validate(loss)
        return cls(config, tuple(output_shape), labels, label_smoothing=loss.label_smoothing)
    return cls(config, tuple(output_shape), labels)
