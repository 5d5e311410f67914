"""`DIR` with `images/` and `masks/`: paired image and mask files for segmentation (a mask has
the image's name with any image suffix, e.g. `images/a.jpg` + `masks/a.png`; grey or palette
pixels holding class indices, `ignore_index` for pixels that count for nothing). With
`train/`, `val/`, `test/` sub-folders each holding that pair, the split folders that exist are
used as given and the missing ones are cut from `train`.
"""

from __future__ import annotations

from pathlib import Path

from nnspec.compiler.errors import DataError
from nnspec.runtime.common.images import IMAGE_SUFFIXES
from nnspec.runtime.train.data.base import DataRequest, DataSplits
from nnspec.runtime.train.data.image_folder import SPLITS, fill_splits, split_folders
from nnspec.runtime.train.data.images import FilesDataset

TASKS = ("segmentation",)


def matches(source: str) -> bool:
    root = Path(source)
    return _is_pair(root) or _is_pair(root / "train")


def _is_pair(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "masks").is_dir()


def open_source(source: str, request: DataRequest) -> DataSplits:
    root = Path(source)
    contract = request.single
    given = split_folders(root)
    parts = {s: pairs(folder) for s, folder in given.items()}
    pool = parts.get("train") or pairs(root)
    parts = fill_splits(parts, pool, request.fractions)
    train, val, test = (FilesDataset(parts[s], contract) for s in SPLITS)
    return DataSplits(train, val, test, None, tuple(contract.shape), request.labels, str(root))


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of `folder/images` and `folder/masks`, matched by file stem."""
    images = _by_stem(folder / "images")
    masks = _by_stem(folder / "masks")
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder / 'images'}")
    unmatched = sorted(set(images) - set(masks))
    if unmatched:
        shown = ", ".join(images[s].name for s in unmatched[:3])
        raise DataError(
            f"{len(unmatched)} image(s) in {folder / 'images'} have no mask in "
            f"{folder / 'masks'} ({shown}{', ...' if len(unmatched) > 3 else ''})\n    hint: "
            "a mask has its image's name (any image suffix, e.g. a.jpg -> a.png)"
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            stem = str(path.relative_to(folder).with_suffix(""))
            if stem in found:
                raise DataError(f"{found[stem]} and {path} share the name {stem!r}")
            found[stem] = path
    return found
