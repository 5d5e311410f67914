"""`torchvision:NAME[:ROOT]`: a torchvision classification dataset already present under ROOT
(default `./data`); it is never downloaded."""

from __future__ import annotations

import inspect

import torch
from torch.utils.data import Dataset

from nnspec.compiler.errors import DataError
from nnspec.runtime.train.data.base import DataRequest, DataSplits, split_indices
from nnspec.runtime.train.data.images import TorchvisionImages

TASKS = ("classification",)


def matches(source: str) -> bool:
    return source.startswith("torchvision:")


def open_source(source: str, request: DataRequest) -> DataSplits:
    _, _, rest = source.partition(":")
    name, _, root = rest.partition(":")
    root = root or "./data"
    try:
        import torchvision.datasets
    except ImportError as error:
        raise DataError(
            f"data {source!r} needs torchvision, which is not installed\n    hint: "
            "pip install torchvision",
        ) from error
    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type) or not issubclass(cls, Dataset):
        raise DataError(f"torchvision has no dataset named {name!r} (names are case-sensitive)")

    def open_split(train: bool) -> Dataset:
        params = inspect.signature(cls).parameters
        if "train" in params:
            kwargs = {"train": train}
        elif "split" in params:
            kwargs = {"split": "train" if train else "test"}
        else:
            raise DataError(f"torchvision dataset {name} has no train/test split nnspec knows")
        try:
            return cls(root, download=False, **kwargs)
        except (RuntimeError, OSError, FileNotFoundError) as error:
            raise DataError(
                f"torchvision dataset {name} is not under {root}: {error}\n    hint: nnspec "
                "never downloads; fetch it once with torchvision (download=True) or give the "
                f"right root: torchvision:{name}:/path/to/root",
            ) from error

    contract = request.single
    full_train, test = open_split(True), open_split(False)
    train_idx, val_idx, _ = split_indices(len(full_train), (request.fractions[0], 0.0))
    classes = list(getattr(full_train, "classes", []) or []) or None
    return DataSplits(
        TorchvisionImages(full_train, train_idx, contract, name),
        TorchvisionImages(full_train, val_idx, contract, name),
        TorchvisionImages(test, range(len(test)), contract, f"{name} test"),
        len(classes) if classes else _count_classes(full_train),
        tuple(contract.shape),
        classes,
        source,
    )


def _count_classes(dataset) -> int:
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = getattr(dataset, "labels", None)
    if targets is None:
        raise DataError("cannot tell how many classes this torchvision dataset has")
    return int(torch.as_tensor(targets).max()) + 1
