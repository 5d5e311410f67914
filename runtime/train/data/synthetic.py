"""`synthetic[:classes=10,shape=3x32x32,n=512,seed=0]`: learnable random data for smoke tests
and benchmarks: a template per class plus noise (classification), the sum of the templates of
a random label set (multilabel), or a fixed linear function of the input plus noise
(regression). `shape` defaults to the spec's input; values land in its `range` when it has one.
"""

from __future__ import annotations

import torch

from nnspec.compiler.errors import DataError
from nnspec.runtime.train.data.base import (
    DataRequest,
    DataSplits,
    array_splits,
    int_option,
    parse_options,
    shape_option,
)

TASKS = ("classification", "multilabel", "regression")
OPTIONS = {"classes", "shape", "n", "seed"}


def matches(source: str) -> bool:
    return source == "synthetic" or source.startswith("synthetic:")


def open_source(source: str, request: DataRequest) -> DataSplits:
    options = parse_options(source.partition(":")[2], source, OPTIONS)
    default_classes = request.output_shape[0] if request.output_shape and \
        request.task == "multilabel" else 10
    classes = int_option(options, "classes", default_classes, source)
    n = int_option(options, "n", 512, source)
    seed = int_option(options, "seed", 0, source)
    shape = shape_option(options, request.input_shape, source)
    if request.task != "regression" and (classes < 2 or n < classes):
        raise DataError(f"synthetic data needs classes >= 2 and n >= classes, got {source!r}")
    generator = torch.Generator().manual_seed(seed)
    if request.task == "regression":
        target_shape = tuple(request.output_shape or (1,))
        x = torch.randn((n, *shape), generator=generator)
        weights = torch.randn((x[0].numel(), max(1, _numel(target_shape))), generator=generator)
        y = (x.flatten(1) @ weights) / x[0].numel() ** 0.5
        y = (y + 0.05 * torch.randn(y.shape, generator=generator)).reshape(n, *target_shape)
        return array_splits(_into_range(x, request), y, request, source)
    templates = torch.randn((classes, *shape), generator=generator)
    if request.task == "multilabel":
        y = (torch.rand((n, classes), generator=generator) < 0.4).float()
        x = torch.einsum("nc,c...->n...", y, templates)
        x = x + 0.5 * torch.randn((n, *shape), generator=generator)
        return array_splits(_into_range(x, request), y, request, source, num_classes=classes)
    y = torch.arange(n) % classes
    x = templates[y] + 0.5 * torch.randn((n, *shape), generator=generator)
    return array_splits(_into_range(x, request), y, request, source, num_classes=classes)


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _into_range(x: torch.Tensor, request: DataRequest) -> torch.Tensor:
    """Standard-normal-ish values squashed into the input's declared range, if any."""
    contract = next(iter(request.inputs.values()))
    if contract.range is None:
        return x
    low, high = contract.range
    return low + (high - low) * torch.sigmoid(x)
