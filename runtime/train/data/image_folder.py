"""`DIR`: an image folder, one sub-folder per class (torchvision's ImageFolder layout), or with
`train/`, `val/`, `test/` sub-folders in that layout; the split folders that exist are used as
given and the missing ones are cut from `train`."""

from __future__ import annotations

from pathlib import Path

from nnspec.compiler.errors import DataError
from nnspec.runtime.common.images import IMAGE_SUFFIXES
from nnspec.runtime.train.data.base import DataRequest, DataSplits, split_indices
from nnspec.runtime.train.data.images import FilesDataset

TASKS = ("classification",)
SPLITS = ("train", "val", "test")


def matches(source: str) -> bool:
    return Path(source).is_dir()


def open_source(source: str, request: DataRequest) -> DataSplits:
    root = Path(source)
    contract = request.single
    given = split_folders(root)
    classes = class_names(given.get("train", root))
    parts = {s: image_items(folder, classes) for s, folder in given.items()}
    pool = parts.get("train") or image_items(root, classes)
    parts = fill_splits(parts, pool, request.fractions)
    train, val, test = (FilesDataset(parts[s], contract) for s in SPLITS)
    return DataSplits(train, val, test, len(classes), tuple(contract.shape), classes, str(root))


def split_folders(root: Path) -> dict[str, Path]:
    """`root/train`, `root/val`, `root/test` where present (only when `train` is)."""
    given = {s: root / s for s in SPLITS if (root / s).is_dir()}
    return given if "train" in given else {}


def fill_splits(parts: dict[str, list], pool: list, fractions: tuple[float, float]) -> dict:
    """The splits a folder did not give, cut from `pool` (its training items) by `fractions`."""
    cut = (0.0 if "val" in parts else fractions[0], 0.0 if "test" in parts else fractions[1])
    train_idx, val_idx, test_idx = split_indices(len(pool), cut)
    parts = dict(parts)
    parts["train"] = [pool[i] for i in train_idx]
    parts.setdefault("val", [pool[i] for i in val_idx])
    parts.setdefault("test", [pool[i] for i in test_idx])
    return parts


def class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"image folder {root} needs one sub-folder per class (at least 2), found "
            f"{len(classes)}\n    hint: lay it out as {root}/<class>/<image>.png",
        )
    return classes


def image_items(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    items = [
        (path, label)
        for label, name in enumerate(classes)
        for path in sorted((root / name).rglob("*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return items
