"""The `nnspec.*` metadata an exported ONNX model carries, and the one reader of it that predict
and serve share.

Kept apart from exporter.py so that readers need neither torch nor the exporter. The keys:

| key | value |
|---|---|
| `nnspec.spec_name`, `nnspec.spec_hash`, `nnspec.version` | where the model came from |
| `nnspec.labels` | JSON list of class (or label) names; absent when unknown |
| `nnspec.normalize` | JSON `{"mean": [...], "std": [...]}` or `null` (inside the graph) |
| `nnspec.input_layout` | `NCHW`, `NC`, ... (`NT` for token ids); JSON by name for several |
| `nnspec.task` | JSON: `{"type": "classification"}`, `{"type": "multilabel", "thresholds": [...]}`, `{"type": "regression", ...}`, `{"type": "segmentation", "ignore_index": 255, "classes": C}` |
| `nnspec.inputs` | JSON: per input name, its contract `{shape, dtype, range, preprocess}` |

A model exported before `nnspec.task` existed reads as a classifier without input contracts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

LABELS = "nnspec.labels"
TASK = "nnspec.task"
INPUTS = "nnspec.inputs"
NORMALIZE = "nnspec.normalize"
TASK_TYPES = ("classification", "multilabel", "regression", "segmentation")


@dataclass(frozen=True)
class ModelRecord:
    """What a served model says about itself: its task, labels and input contracts."""

    task: dict = field(default_factory=lambda: {"type": "classification"})
    labels: list[str] | None = None
    #: input name -> nnspec.compiler.schema.InputSpec (shape, dtype, range, preprocess)
    inputs: dict = field(default_factory=dict)

    @property
    def task_type(self) -> str:
        return self.task["type"]


def labels_from_metadata(props: dict[str, str]) -> list[str] | None:
    """Class labels from a model's metadata_props; None when the model has none.

    Raises:
        ValueError: the entry is there but is not a JSON list.
    """
    labels = _json(props, LABELS)
    if labels is None:
        return None
    if not isinstance(labels, list):
        raise ValueError(f"metadata {LABELS} should be a JSON list of class names")
    return [str(label) for label in labels]


def read_model_record(props: dict[str, str]) -> ModelRecord:
    """The task, labels and input contracts of a model's metadata_props.

    Raises:
        ValueError: an `nnspec.*` entry is there but malformed (the message names it).
    """
    from pydantic import ValidationError

    from nnspec.compiler.schema import InputSpec

    task = _json(props, TASK) or {"type": "classification"}
    if not isinstance(task, dict) or task.get("type") not in TASK_TYPES:
        raise ValueError(f"metadata {TASK} should be a JSON object with a type in {TASK_TYPES}")
    thresholds = task.get("thresholds")
    if thresholds is not None and not (
        isinstance(thresholds, list)
        and all(isinstance(t, int | float) and not isinstance(t, bool) for t in thresholds)
    ):
        raise ValueError(f"metadata {TASK} thresholds should be a list of numbers")
    raw_inputs = _json(props, INPUTS) or {}
    if not isinstance(raw_inputs, dict):
        raise ValueError(f"metadata {INPUTS} should be a JSON object of input contracts")
    inputs = {}
    for name, contract in raw_inputs.items():
        try:
            inputs[name] = InputSpec.model_validate(contract)
        except ValidationError as error:
            first = error.errors()[0]
            raise ValueError(f"metadata {INPUTS} entry {name!r}: {first['msg']}") from error
    return ModelRecord(task, labels_from_metadata(props), inputs)


def _json(props: dict[str, str], key: str):
    raw = props.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"metadata {key} is not JSON ({error})") from error
