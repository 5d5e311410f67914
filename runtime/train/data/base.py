"""What every data source shares: the request a spec makes, the splits a source returns, the
in-memory dataset and the fixed-seed split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from nnspec.compiler.errors import DataError

SPLIT_SEED = 0


@dataclass(frozen=True)
class DataRequest:
    """What the spec asks of a data source: its inputs' contracts (shape, dtype, range,
    preprocess), its task, the target shape its output implies, and the split fractions."""

    inputs: dict  # name -> nnspec.compiler.schema.InputSpec, in the model's argument order
    task: str = "classification"
    output_shape: tuple[int, ...] | None = None
    labels: list[str] | None = None
    fractions: tuple[float, float] = (0.1, 0.2)

    @property
    def single(self):
        """The contract of the one input (DataError for a multi-input spec)."""
        if len(self.inputs) != 1:
            raise DataError(
                f"this source feeds one input; the spec has {len(self.inputs)} "
                f"({', '.join(self.inputs)})\n    hint: give an .npz with one array per input "
                "name and `y`"
            )
        return next(iter(self.inputs.values()))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.single.shape)


@dataclass
class DataSplits:
    """A source's train/val/test datasets and what is known of its targets.

    `num_classes` counts classes (classification, segmentation) or labels (multilabel); it is
    None when unknown (regression, or masks not scanned). `classes_inferred` says the count
    was inferred from the largest target value rather than named by the source.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int | None
    sample_shape: tuple[int, ...] | dict[str, tuple[int, ...]]
    labels: list[str] | None
    source: str
    classes_inferred: bool = False
    extra: dict = field(default_factory=dict)


class ArrayDataset(Dataset):
    """In-memory samples: `x` (one tensor, or a tuple of tensors for named inputs) served as
    float32 (int64 token inputs stay int64), targets `y` as given."""

    def __init__(self, x, y: torch.Tensor, contracts: Sequence | None = None):
        self.x = x
        self.y = y
        self.contracts = list(contracts) if contracts is not None else None

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int):
        if isinstance(self.x, tuple):
            return tuple(_as_input(x[index]) for x in self.x), self.y[index]
        return _as_input(self.x[index]), self.y[index]

    def augment_sample(self, index: int, geometry: bool = True):
        """(float32 sample in the input's range, target) for the augmentation pipeline."""
        return _as_input(self.x[index]), self.y[index]


def _as_input(value: torch.Tensor) -> torch.Tensor:
    return value if value.dtype == torch.int64 else value.float()


def split_indices(n: int, fractions: tuple[float, float]) -> tuple[list[int], ...]:
    """Train/val/test index lists from a permutation with the fixed SPLIT_SEED, so the test
    set is the same whatever the training seed."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_val = math.floor(n * fractions[0])
    n_test = math.floor(n * fractions[1])
    if n - n_val - n_test < 1:
        raise DataError(f"{n} samples leave nothing to train on after the val/test split")
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def array_splits(x, y: torch.Tensor, request: DataRequest, source: str,
                 labels: list[str] | None = None, num_classes: int | None = None,
                 classes_inferred: bool = False) -> DataSplits:  # fmt: skip
    """Splits of in-memory arrays; `x` is a tensor or a tuple of tensors (named inputs)."""
    contracts = list(request.inputs.values())
    parts = []
    for index in split_indices(len(y), request.fractions):
        rows = torch.as_tensor(index, dtype=torch.long)
        xs = tuple(a[rows] for a in x) if isinstance(x, tuple) else x[rows]
        parts.append(ArrayDataset(xs, y[rows], contracts))
    shape = (
        {name: tuple(a.shape[1:]) for name, a in zip(request.inputs, x, strict=True)}
        if isinstance(x, tuple)
        else tuple(x.shape[1:])
    )
    return DataSplits(*parts, num_classes, shape, labels, source, classes_inferred)


def check_values_in_range(array: np.ndarray | torch.Tensor, contract, where: str) -> None:
    """DataError when `array` holds values outside the input's declared range (or NaN/inf)."""
    from nnspec.runtime.common.images import values_outside

    values = array.numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    outside = values_outside(values, contract)
    if outside is None:
        return
    if contract.range is None:
        raise DataError(f"{where} holds values that are not finite (NaN or inf)")
    low, high = contract.range
    raise DataError(
        f"{where} holds values in [{outside[0]:g}, {outside[1]:g}], outside the spec's "
        f"input.range [{low:g}, {high:g}]\n    hint: the range states the raw values the model "
        "takes; correct it, or bring the data into it"
    )


def parse_options(text: str, source: str, known: set[str]) -> dict[str, str]:
    """`k=v,k=v` options of a source like `synthetic:classes=3,n=60`."""
    options = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"expected key=value in {source!r}, got {item!r}")
        options[key.strip()] = value.strip()
    unknown = set(options) - known
    if unknown:
        raise DataError(
            f"unknown option(s) {sorted(unknown)} in {source!r}; known: {sorted(known)}"
        )
    return options


def int_option(options: dict[str, str], key: str, default: int, source: str) -> int:
    try:
        return int(options.get(key, default))
    except ValueError as error:
        raise DataError(f"bad option {key}={options[key]!r} in {source!r}: {error}") from error


def shape_option(options: dict[str, str], default: tuple[int, ...], source: str):
    if "shape" not in options:
        return tuple(default)
    try:
        return tuple(int(d) for d in options["shape"].split("x"))
    except ValueError as error:
        raise DataError(f"bad option shape={options['shape']!r} in {source!r}") from error
