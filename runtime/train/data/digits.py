"""`digits`: the bundled UCI optical digits (1,797 8x8 images, values 0..16, 10 classes)."""

from __future__ import annotations

import importlib.resources

import numpy as np
import torch

from nnspec.runtime.train.data.base import DataRequest, DataSplits, array_splits

TASKS = ("classification",)


def matches(source: str) -> bool:
    return source == "digits"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits: x [1797, 1, 8, 8] with values 0..16 (float32), y [1797] (int64)."""
    asset = importlib.resources.files("nnspec.runtime.train") / "assets" / "digits.npz"
    with asset.open("rb") as handle, np.load(handle) as arrays:
        return arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)


def open_source(source: str, request: DataRequest) -> DataSplits:
    x, y = (torch.from_numpy(a) for a in digits_arrays())
    return array_splits(x, y, request, "digits", [str(d) for d in range(10)], num_classes=10)
