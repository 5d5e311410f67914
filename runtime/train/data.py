"""Data sources for training and evaluation, split into train/val/test.

`--data` takes one of:

- `digits`: the bundled UCI optical digits (1,797 8x8 images, values 0..16, 10 classes),
- `synthetic[:classes=10,shape=3x32x32,n=512,seed=0]`: learnable random data (class templates
  plus noise) for smoke tests and benchmarks; `shape` defaults to the spec's input,
- `PATH.npz`: arrays `x` [N, ...] and `y` [N] (optionally `x_test`, `y_test` for the test split),
- `DIR`: an image folder, one sub-folder per class (torchvision's ImageFolder layout), or with
  `train/`, `val/`, `test/` sub-folders in that layout,
- `torchvision:NAME[:ROOT]`: a torchvision dataset already present under ROOT (default
  `./data`); it is never downloaded.

Samples come out raw, as float32 (arrays keep their values; images are scaled to [0, 1] as
torchvision's ToTensor does): input normalisation belongs to the model. Splits that a source
does not provide are cut from its training data with a fixed seed (`SPLIT_SEED`), so the test
set stays the same whatever the training seed.
"""

from __future__ import annotations

import importlib.resources
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from nnspec.compiler.errors import DataError

SPLIT_SEED = 0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    sample_shape: tuple[int, ...]
    labels: list[str] | None
    source: str


class ArrayDataset(Dataset):
    """In-memory samples `x` (any dtype) served as float32, with int64 labels `y`."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y.long()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index].float(), self.y[index]


class ImageFilesDataset(Dataset):
    """Image files decoded with PIL and resized to the spec's input shape on access."""

    def __init__(self, items: list[tuple[Path, int]], shape: tuple[int, ...]):
        self.items, self.shape = items, shape

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from PIL import Image

        path, label = self.items[index]
        with Image.open(path) as image:
            return image_to_tensor(image, self.shape), torch.tensor(label)


class _ImageDataset(Dataset):
    """A torchvision dataset of PIL images, converted like image folders."""

    def __init__(self, dataset: Dataset, shape: tuple[int, ...]):
        self.dataset, self.shape = dataset, shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.dataset[index]
        return image_to_tensor(image, self.shape), torch.tensor(int(label))


def load_data(
    source: str,
    input_shape: Sequence[int],
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
) -> DataSplits:
    """Open `source` (see the module docstring) for a model whose per-sample input is
    `input_shape`; raise DataError when it is missing, unreadable or does not fit."""
    shape = tuple(int(d) for d in input_shape)
    fractions = (val_fraction, test_fraction)
    if source == "digits":
        splits = _digits(fractions)
    elif source == "synthetic" or source.startswith("synthetic:"):
        splits = _synthetic(source, shape, fractions)
    elif source.startswith("torchvision:"):
        splits = _torchvision(source, shape, val_fraction)
    elif source.endswith(".npz"):
        splits = _npz(Path(source), fractions)
    elif Path(source).is_dir():
        splits = _image_folder(Path(source), shape, fractions)
    else:
        raise DataError(
            f"unknown data source {source!r}\n    hint: use digits, synthetic[:k=v,...], "
            "a .npz file, an image folder, or torchvision:NAME[:ROOT]",
        )
    if splits.sample_shape != shape:
        raise DataError(
            f"data {source!r} has samples of shape {list(splits.sample_shape)}, but the spec's "
            f"input is {list(shape)}\n    hint: change the spec's input.shape, or pick data "
            "that fits it",
        )
    return splits


def image_to_tensor(image, shape: tuple[int, ...]) -> torch.Tensor:
    """A PIL image as a float32 [C, H, W] tensor in [0, 1], converted to C channels (1 or 3)
    and resized to H x W."""
    if len(shape) != 3:
        raise DataError(f"images need a [C, H, W] input, but the spec's input is {list(shape)}")
    channels, height, width = shape
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"images can feed 1 or 3 channels, but the spec's input has {channels}")
    image = image.convert(mode)
    if image.size != (width, height):
        image = image.resize((width, height))
    array = np.asarray(image, dtype=np.uint8).reshape(height, width, channels)
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).float() / 255.0


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over this process's share of `dataset`.

    Training shuffles with a DistributedSampler seeded by `seed`; call
    `loader.sampler.set_epoch(epoch)` each epoch. The order then depends only on (seed, epoch),
    never on global RNG state, which is what lets a resumed run see the same batches. Training
    drops a last partial batch (a batch of one breaks batch norm). Evaluation shards without
    padding, so per-rank counts add up to the dataset size. `pin_memory` speeds up copies to
    a GPU.
    """
    if train:
        sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
        )
        drop_last = len(sampler) > batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )
    shard = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(
        shard,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
    )


def channel_stats(dataset: Dataset, batch_size: int = 512) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) standard deviation over every sample of `dataset`.

    The channel is the first per-sample dim; a constant channel gets std 1 so that normalising
    it cannot divide by zero.
    """
    total = total_sq = None
    count = 0
    for x, _ in DataLoader(dataset, batch_size=batch_size):
        x = x.double().transpose(0, 1).reshape(x.shape[1], -1)
        total = x.sum(1) if total is None else total + x.sum(1)
        total_sq = (x * x).sum(1) if total_sq is None else total_sq + (x * x).sum(1)
        count += x.shape[1]
    if total is None:
        raise DataError("cannot compute normalisation statistics: the training split is empty")
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.tolist(), std.tolist()


def _split_indices(n: int, fractions: tuple[float, float]) -> tuple[list[int], ...]:
    """Train/val/test index lists from a permutation with the fixed SPLIT_SEED."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_val = math.floor(n * fractions[0])
    n_test = math.floor(n * fractions[1])
    if n - n_val - n_test < 1:
        raise DataError(f"{n} samples leave nothing to train on after the val/test split")
    return order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test]


def _array_splits(
    x: torch.Tensor,
    y: torch.Tensor,
    fractions: tuple[float, float],
    source: str,
    labels: list[str] | None = None,
) -> DataSplits:
    train, val, test = (ArrayDataset(x[i], y[i]) for i in _split_indices(len(y), fractions))
    return DataSplits(train, val, test, int(y.max()) + 1, tuple(x.shape[1:]), labels, source)


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits: x [1797, 1, 8, 8] with values 0..16 (float32), y [1797] (int64)."""
    asset = importlib.resources.files("nnspec.runtime.train") / "assets" / "digits.npz"
    with asset.open("rb") as handle, np.load(handle) as arrays:
        return arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)


def _digits(fractions: tuple[float, float]) -> DataSplits:
    x, y = (torch.from_numpy(a) for a in digits_arrays())
    return _array_splits(x, y, fractions, "digits", [str(d) for d in range(10)])


def _synthetic(source: str, input_shape: tuple[int, ...], fractions) -> DataSplits:
    options = _parse_options(source.partition(":")[2], source)
    known = {"classes", "shape", "n", "seed"}
    if set(options) - known:
        raise DataError(
            f"unknown synthetic option(s) {sorted(set(options) - known)} in {source!r}; "
            f"known: {sorted(known)}",
        )
    try:
        classes = int(options.get("classes", 10))
        n = int(options.get("n", 512))
        seed = int(options.get("seed", 0))
        shape = (
            tuple(int(d) for d in options["shape"].split("x"))
            if "shape" in options
            else input_shape
        )
    except ValueError as error:
        raise DataError(f"bad synthetic option in {source!r}: {error}") from error
    if classes < 2 or n < classes:
        raise DataError(f"synthetic data needs classes >= 2 and n >= classes, got {source!r}")
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn((classes, *shape), generator=generator)
    y = torch.arange(n) % classes
    x = templates[y] + 0.5 * torch.randn((n, *shape), generator=generator)
    return _array_splits(x, y, fractions, source)


def _npz(path: Path, fractions: tuple[float, float]) -> DataSplits:
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    try:
        with np.load(path) as arrays:
            data = {k: torch.from_numpy(arrays[k]) for k in arrays.files}
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read {path} as .npz: {error}") from error
    if "x" not in data or "y" not in data:
        raise DataError(f"{path} must hold arrays 'x' and 'y'; it has {sorted(data)}")
    x, y = data["x"], data["y"]
    if len(x) != len(y) or y.ndim != 1:
        raise DataError(f"{path}: x has {len(x)} samples, y has shape {list(y.shape)}")
    if "x_test" not in data:
        return _array_splits(x, y, fractions, str(path))
    val_only = (fractions[0], 0.0)
    train_idx, val_idx, _ = _split_indices(len(y), val_only)
    x_test, y_test = data["x_test"], data["y_test"]
    classes = int(max(y.max(), y_test.max())) + 1
    return DataSplits(
        ArrayDataset(x[train_idx], y[train_idx]),
        ArrayDataset(x[val_idx], y[val_idx]),
        ArrayDataset(x_test, y_test),
        classes,
        tuple(x.shape[1:]),
        None,
        str(path),
    )


def _image_folder(root: Path, shape: tuple[int, ...], fractions) -> DataSplits:
    """`root/<class>/*` split by `fractions`, or `root/{train,val,test}/<class>/*` where the
    split folders that exist are used as given and the missing ones are cut from train."""
    given = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in given:
        given = {}
    classes = _class_names(given.get("train", root))
    parts = {s: _image_items(folder, classes) for s, folder in given.items()}
    pool = parts.get("train") or _image_items(root, classes)
    cut = (0.0 if "val" in parts else fractions[0], 0.0 if "test" in parts else fractions[1])
    train_idx, val_idx, test_idx = _split_indices(len(pool), cut)
    parts["train"] = [pool[i] for i in train_idx]
    parts.setdefault("val", [pool[i] for i in val_idx])
    parts.setdefault("test", [pool[i] for i in test_idx])
    train, val, test = (ImageFilesDataset(parts[s], shape) for s in ("train", "val", "test"))
    return DataSplits(train, val, test, len(classes), shape, classes, str(root))


def _class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"image folder {root} needs one sub-folder per class (at least 2), found "
            f"{len(classes)}\n    hint: lay it out as {root}/<class>/<image>.png",
        )
    return classes


def _image_items(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    items = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    return items


def _torchvision(source: str, shape: tuple[int, ...], val_fraction: float) -> DataSplits:
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

    full_train, test = open_split(True), open_split(False)
    train_idx, val_idx, _ = _split_indices(len(full_train), (val_fraction, 0.0))
    wrapped = _ImageDataset(full_train, shape)
    classes = list(getattr(full_train, "classes", []) or []) or None
    return DataSplits(
        Subset(wrapped, train_idx),
        Subset(wrapped, val_idx),
        _ImageDataset(test, shape),
        len(classes) if classes else _count_classes(full_train),
        shape,
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


def _parse_options(text: str, source: str) -> dict[str, str]:
    options = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"expected key=value in {source!r}, got {item!r}")
        options[key.strip()] = value.strip()
    return options
