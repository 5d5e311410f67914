"""`FILE.npz`: `x` [N, ...] and `y` [N, ...] arrays (optionally `x_test`, `y_test` as the test
split), or, for a spec with named `inputs:`, one array per input name (and `NAME_test`).

`y` holds what the task trains on: class indices [N] (classification), multi-hot [N, L]
(multilabel), values [N, *output] (regression), class maps [N, H, W] (segmentation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnspec.compiler.errors import DataError
from nnspec.compiler.files import not_a_regular_file
from nnspec.runtime.train.data.base import (
    ArrayDataset,
    DataRequest,
    DataSplits,
    array_splits,
    check_values_in_range,
    split_indices,
)

TASKS = ("classification", "multilabel", "regression", "segmentation")


def matches(source: str) -> bool:
    return source.endswith(".npz")


def open_source(source: str, request: DataRequest) -> DataSplits:
    path = Path(source)
    problem = not_a_regular_file(path)
    if problem:
        raise DataError(f"data file {path} {problem}")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            data = {k: arrays[k] for k in arrays.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from error
    names = _array_names(request, data, path)
    if "y" not in data:
        raise DataError(f"{path} must hold the targets as an array 'y'; it has {sorted(data)}")
    x = tuple(_input_array(data, key, contract, path)
              for key, contract in zip(names, request.inputs.values(), strict=True))  # fmt: skip
    y = _targets(data["y"], request, path)
    for key, array in zip(names, x, strict=True):
        if len(array) != len(y):
            raise DataError(f"{path}: {key!r} has {len(array)} samples, 'y' has {len(y)}")
    classes = _class_count(y, request)
    inferred = request.task == "classification"  # from the largest index, not named
    single = len(names) == 1
    if f"{names[0]}_test" not in data:
        return array_splits(x[0] if single else x, y, request, str(path), request.labels,
                            classes, classes_inferred=inferred)  # fmt: skip
    x_test = tuple(_input_array(data, f"{key}_test", contract, path)
                   for key, contract in zip(names, request.inputs.values(), strict=True))  # fmt: skip
    if "y_test" not in data:
        raise DataError(f"{path} has {names[0]}_test but no y_test")
    y_test = _targets(data["y_test"], request, path)
    train_idx, val_idx, _ = split_indices(len(y), (request.fractions[0], 0.0))
    contracts = list(request.inputs.values())

    def take(arrays, rows):
        rows = torch.as_tensor(rows, dtype=torch.long)
        picked = tuple(a[rows] for a in arrays)
        return picked[0] if single else picked

    test_classes = _class_count(y_test, request)
    if classes is not None and test_classes is not None:
        classes = max(classes, test_classes)
    shape = tuple(x[0].shape[1:]) if single else {
        n: tuple(a.shape[1:]) for n, a in zip(request.inputs, x, strict=True)}
    return DataSplits(
        ArrayDataset(take(x, train_idx), y[train_idx], contracts),
        ArrayDataset(take(x, val_idx), y[val_idx], contracts),
        ArrayDataset(x_test[0] if single else x_test, y_test, contracts),
        classes, shape, request.labels, str(path), classes_inferred=inferred,
    )


def _array_names(request: DataRequest, data: dict, path: Path) -> list[str]:
    """The array holding each input: `x` for one input (or its name), else each input's name."""
    names = list(request.inputs)
    if len(names) == 1:
        key = "x" if "x" in data else names[0]
        if key not in data:
            raise DataError(f"{path} must hold the inputs as an array 'x'; it has {sorted(data)}")
        return [key]
    missing = [n for n in names if n not in data]
    if missing:
        raise DataError(
            f"{path} needs one array per input ({', '.join(names)}); missing "
            f"{', '.join(missing)} (it has {', '.join(sorted(data))})"
        )
    return names


def _input_array(data: dict, key: str, contract, path: Path) -> torch.Tensor:
    array = data.get(key)
    if array is None:
        raise DataError(f"{path} has no array {key!r}")
    if array.dtype == object or not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: {key!r} holds {array.dtype} values, not numbers")
    if contract.dtype == "int64":
        if not np.issubdtype(array.dtype, np.integer):
            raise DataError(f"{path}: {key!r} must hold integer token ids for an int64 input")
        tensor = torch.from_numpy(array.astype(np.int64))
    else:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    check_values_in_range(tensor, contract, f"{path}: {key!r}")
    return tensor


def _targets(y: np.ndarray, request: DataRequest, path: Path) -> torch.Tensor:
    if y.dtype == object or not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise DataError(f"{path}: 'y' holds {y.dtype} values, not numbers")
    if request.task in ("classification", "segmentation"):
        if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
            raise DataError(f"{path}: 'y' must hold integer class indices for {request.task}")
        return torch.from_numpy(y.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))


def _class_count(y: torch.Tensor, request: DataRequest) -> int | None:
    if request.task == "classification" and y.numel():
        return int(y.max()) + 1
    if request.task == "multilabel" and y.ndim == 2:
        return int(y.shape[1])
    return None
