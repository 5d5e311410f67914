"""`FILE.csv`: image paths and their label sets for multilabel training.

One row per image, a header `path,labels`: the path relative to the CSV's folder (or
absolute), the labels separated by spaces, `;` or `|` (an empty field: no label). The label
names are the spec's `labels` when it has them (any other name is an error), else every name
the file uses, sorted.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import torch

from nnspec.compiler.errors import DataError
from nnspec.compiler.files import not_a_regular_file
from nnspec.runtime.train.data.base import DataRequest, DataSplits, split_indices
from nnspec.runtime.train.data.images import FilesDataset

TASKS = ("multilabel",)
SEPARATORS = re.compile(r"[\s;|]+")


def matches(source: str) -> bool:
    return source.endswith(".csv")


def open_source(source: str, request: DataRequest) -> DataSplits:
    path = Path(source)
    problem = not_a_regular_file(path)
    if problem:
        raise DataError(f"data file {path} {problem}")
    rows = _read_rows(path)
    names = list(request.labels) if request.labels else sorted({n for _, s in rows for n in s})
    if not names:
        raise DataError(f"{path} names no labels at all")
    index = {name: i for i, name in enumerate(names)}
    items = []
    for line, (file, labels) in enumerate(rows, start=2):
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise DataError(
                f"{path}:{line}: label(s) {', '.join(unknown)} are not in the spec's labels "
                f"({', '.join(names)})"
            )
        target = torch.zeros(len(names))
        target[[index[n] for n in labels]] = 1.0
        image = Path(file) if Path(file).is_absolute() else path.parent / file
        if not image.is_file():
            raise DataError(f"{path}:{line}: image {file} does not exist (looked at {image})")
        items.append((image, target))
    train_idx, val_idx, test_idx = split_indices(len(items), request.fractions)
    contract = request.single
    train, val, test = (FilesDataset([items[i] for i in part], contract)
                        for part in (train_idx, val_idx, test_idx))  # fmt: skip
    return DataSplits(train, val, test, len(names), tuple(contract.shape), names, str(path))


def _read_rows(path: Path) -> list[tuple[str, list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"path", "labels"} <= set(reader.fieldnames):
                raise DataError(
                    f"{path} needs a header `path,labels`; it has {reader.fieldnames}"
                )
            rows = [
                (row["path"] or "", [n for n in SEPARATORS.split(row["labels"] or "") if n])
                for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read {path} as CSV: {error}") from error
    if not rows:
        raise DataError(f"{path} lists no images")
    return rows
