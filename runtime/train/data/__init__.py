"""Data sources for training and evaluation, split into train/val/test.

`--data` (or the spec's `train.data`) names a source; each is one module here with `TASKS`
(the tasks whose targets it gives), `matches(source)` and `open_source(source, request)`, and
one entry in `SOURCES`, tried in order:

| source | module | tasks |
|---|---|---|
| `digits` | digits | classification |
| `synthetic[:classes=10,shape=3x32x32,n=512,seed=0]` | synthetic | classification, multilabel, regression |
| `shapes[:n=512,seed=0,max_shapes=3]` | shapes | segmentation, multilabel, regression, classification |
| `torchvision:NAME[:ROOT]` | torchvision_source | classification |
| `FILE.npz` | npz | every task; one array per input name for named inputs |
| `FILE.csv` (`path,labels`) | multilabel_csv | multilabel |
| `DIR` with `images/` + `masks/` | segmentation_folders | segmentation |
| `DIR` of class sub-folders | image_folder | classification |

Samples come out raw, in the input's contract: arrays keep their values (and must lie in the
spec's `input.range` when it declares one), images are converted as `nnspec predict` converts
them (runtime/common/images.py). Input normalisation belongs to the model. Splits a source does
not provide are cut from its training data with a fixed seed (`SPLIT_SEED`), so the test set
stays the same whatever the training seed.
"""

from __future__ import annotations

from collections.abc import Sequence

from nnspec.compiler.errors import DataError
from nnspec.runtime.train.data import (
    digits,
    image_folder,
    multilabel_csv,
    npz,
    segmentation_folders,
    shapes,
    synthetic,
    torchvision_source,
)
from nnspec.runtime.train.data.base import SPLIT_SEED, DataRequest, DataSplits
from nnspec.runtime.train.data.digits import digits_arrays
from nnspec.runtime.train.data.loader import channel_stats, make_loader

#: the data sources, tried in this order
SOURCES = (digits, synthetic, shapes, torchvision_source, npz, multilabel_csv,
           segmentation_folders, image_folder)  # fmt: skip
FORMS = ("digits, synthetic[:k=v,...], shapes[:k=v,...], a .npz file, a .csv of image paths and "
         "labels, an image folder (class sub-folders, or images/ + masks/), "
         "torchvision:NAME[:ROOT]")  # fmt: skip

__all__ = ["SOURCES", "SPLIT_SEED", "DataRequest", "DataSplits", "channel_stats",
           "digits_arrays", "load_data", "load_spec_data", "make_loader", "request_for",
           "undeclared_range_note"]  # fmt: skip


def load_data(
    source: str,
    inputs,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    *,
    task: str = "classification",
    output_shape: Sequence[int] | None = None,
    labels: list[str] | None = None,
) -> DataSplits:
    """Open `source` (see the module docstring) for a model whose inputs are `inputs`.

    Args:
        inputs: a per-sample shape, an InputSpec, or {name: InputSpec} for named inputs.
        task: the spec's task, which decides the targets a source must give.
        output_shape: the model's per-sample output shape (the regression target's shape).
        labels: the spec's labels (class or label names), if it has them.

    Raises:
        DataError: the source is unknown, missing, unreadable, or does not fit the spec.
    """
    request = DataRequest(_contracts(inputs), task,
                          tuple(output_shape) if output_shape is not None else None,
                          labels, (val_fraction, test_fraction))  # fmt: skip
    return open_request(source, request)


def open_request(source: str, request: DataRequest) -> DataSplits:
    """The splits of `source` for `request`, checked against the request's input shapes."""
    module = next((m for m in SOURCES if m.matches(source)), None)
    if module is None:
        raise DataError(f"unknown data source {source!r}\n    hint: use {FORMS}")
    if request.task not in module.TASKS:
        raise DataError(
            f"data {source!r} gives {' / '.join(module.TASKS)} targets, but the spec's task is "
            f"{request.task}\n    hint: {_hint(request.task)}"
        )
    splits = module.open_source(source, request)
    _check_shapes(splits, request, source)
    return splits


def request_for(spec, settings=None, output_shape: Sequence[int] | None = None) -> DataRequest:
    """The DataRequest of a spec (its inputs, task, labels; split fractions from `settings`,
    a TrainConfig, else the spec's `train:`)."""
    from nnspec.compiler.training_schema import TrainConfig

    settings = settings or spec.train or TrainConfig()
    if output_shape is None:
        from nnspec.compiler import compile_graph

        output_shape = compile_graph(spec).output_shape
    labels = list(spec.labels) if spec.labels else None
    return DataRequest(dict(spec.input_specs), spec.task.type, tuple(output_shape), labels,
                       (settings.val_fraction, settings.test_fraction))  # fmt: skip


def load_spec_data(spec, source: str | None = None, settings=None, output_shape=None):
    """The splits of `source` (default: `settings.data`, else the spec's `train.data`) for
    `spec`: its inputs' contracts, task, labels and split fractions."""
    from nnspec.compiler.training_schema import TrainConfig

    settings = settings or spec.train or TrainConfig()
    return open_request(source or settings.data, request_for(spec, settings, output_shape))


def undeclared_range_note(spec, splits: DataSplits) -> str | None:
    """A note when a float image input declares no `range` but its training values leave
    [0, 1]: image files given to predict and serve would be scaled to [0, 1], not to them."""
    contract = next(iter(spec.input_specs.values()))
    if contract.range is not None or not contract.is_image or len(splits.train) == 0:
        return None
    x, _ = splits.train[0]
    low, high = float(x.min()), float(x.max())
    if low >= 0 and high <= 1:
        return None
    return (f"note: the training inputs reach [{low:g}, {high:g}] but the spec's input "
            "declares no range; image files given to predict and serve will be scaled to "
            "[0, 1]. State the raw range, e.g. input: {..., range: [0, 16]}")  # fmt: skip


def _contracts(inputs) -> dict:
    from nnspec.compiler.schema import InputSpec

    if isinstance(inputs, dict):
        return dict(inputs)
    if isinstance(inputs, InputSpec):
        return {"input": inputs}
    return {"input": InputSpec(shape=[int(d) for d in inputs])}


def _check_shapes(splits: DataSplits, request: DataRequest, source: str) -> None:
    wanted = {name: tuple(c.shape) for name, c in request.inputs.items()}
    found = splits.sample_shape if isinstance(splits.sample_shape, dict) else \
        {next(iter(wanted)): tuple(splits.sample_shape)}
    for name, shape in wanted.items():
        if tuple(found.get(name, ())) != shape:
            where = "input" if len(wanted) == 1 else f"input {name!r}"
            raise DataError(
                f"data {source!r} has samples of shape {list(found.get(name, ()))}, but the "
                f"spec's {where} is {list(shape)}\n    hint: change the spec's input shape, or "
                "pick data that fits it",
            )


def _hint(task: str) -> str:
    forms = [m.__name__.rsplit(".", 1)[-1] for m in SOURCES if task in m.TASKS]
    return f"sources for {task}: {', '.join(forms)} (see docs/data.md)"
