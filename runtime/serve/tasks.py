"""What a model's task makes of its raw output, and what its input contract accepts, for
`nnspec predict` and `nnspec serve` alike (numpy only: the server never imports torch).

Everything here reads the model's metadata record (`nnspec.runtime.export.metadata`):

- task outputs: multilabel models add `probabilities` (sigmoid) and `predictions` (BOOL, at
  each label's threshold); segmentation models add `mask` (INT64, the class of each pixel).
  Classification keeps its raw `logits` (the classification extension gives top-k), and a
  regression model's graph already answers in the targets' units.
- input checks: an input with a contract (`nnspec.inputs`) refuses values outside its declared
  `range`, or not finite, naming the input, the values found and the range; models without
  contracts take what they take.
- images: encoded image files (PNG, JPEG, ...) become the model's input exactly as training
  converted them (runtime/common/images.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnspec.runtime.common.images import ImageError, image_to_input, open_image, values_outside


@dataclass(frozen=True)
class DerivedOutput:
    """An output the server computes from the model's own: name, KServe datatype, shape."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    values = logits.astype(np.float64)
    shifted = np.exp(values - values.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    values = logits.astype(np.float64)
    # the two forms keep exp() from overflowing for large |x|
    positive = values >= 0
    out = np.empty_like(values)
    out[positive] = 1.0 / (1.0 + np.exp(-values[positive]))
    exp = np.exp(values[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out


def thresholds(record, count: int) -> np.ndarray:
    """The multilabel decision threshold of each of `count` labels (0.5 when unrecorded)."""
    values = record.task.get("thresholds") or [0.5] * count
    if len(values) != count:
        raise ValueError(f"the model records {len(values)} thresholds for {count} labels")
    return np.asarray(values, dtype=np.float64)


def derived_outputs(record, output_shape: tuple[int, ...]) -> list[DerivedOutput]:
    """The task outputs the server adds beside a model output of `output_shape` (batch -1)."""
    task = record.task_type
    if task == "multilabel":
        return [DerivedOutput("probabilities", "FP32", output_shape),
                DerivedOutput("predictions", "BOOL", output_shape)]  # fmt: skip
    if task == "segmentation" and len(output_shape) >= 3:
        return [DerivedOutput("mask", "INT64", (output_shape[0], *output_shape[2:]))]
    return []


def task_outputs(record, output: np.ndarray) -> dict[str, np.ndarray]:
    """The task outputs (see `derived_outputs`) of a batch of raw model output."""
    task = record.task_type
    if task == "multilabel":
        probabilities = sigmoid(output)
        limits = thresholds(record, output.shape[1]).reshape(1, -1)
        return {"probabilities": probabilities.astype(np.float32),
                "predictions": probabilities >= limits}  # fmt: skip
    if task == "segmentation":
        return {"mask": output.argmax(axis=1).astype(np.int64)}
    return {}


def contract_problem(record, name: str, array: np.ndarray) -> str | None:
    """Why `array` cannot be input `name` of the model (values outside its declared range, or
    not finite), or None when it can."""
    contract = record.inputs.get(name)
    if contract is None:  # not an nnspec model, or exported before contracts: no checks
        return None
    outside = values_outside(array, contract)
    if outside is None:
        return None
    if contract.range is None or not np.isfinite(outside).all():
        return f"input {name!r} holds values that are not finite (NaN or inf)"
    low, high = contract.range
    return (f"input {name!r} holds values in [{outside[0]:g}, {outside[1]:g}], outside the "
            f"model's input range [{low:g}, {high:g}] (the raw values it was trained on)")


def image_input(record, name: str, encoded: list[bytes]) -> np.ndarray:
    """Encoded image files as a batch of input `name`, converted as training converted them.

    Raises:
        ValueError: the model has no image contract for `name`, or an image cannot be read.
    """
    contract = record.inputs.get(name)
    if contract is None or not contract.is_image:
        raise ValueError(f"input {name!r} does not take image files")
    batch = []
    for index, data in enumerate(encoded):
        try:
            batch.append(image_to_input(open_image(data), contract))
        except ImageError as error:
            raise ValueError(f"input {name!r} image {index} {error}") from error
    return np.stack(batch) if batch else np.zeros((0, *contract.shape), np.float32)
