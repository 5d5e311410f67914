"""Datasets of images decoded on access: files on disk (with class, multi-hot or mask targets)
and torchvision datasets of PIL images. Evaluation samples go through the same conversion as
`nnspec predict` (runtime/common/images.py); training samples can instead hand the decoded
8-bit pixels to the augmentation pipeline."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from nnspec.compiler.errors import DataError
from nnspec.runtime.common.images import (
    ImageError,
    image_to_input,
    mask_to_target,
    open_image,
    pixels,
    preprocess_image,
)


class ImageDataset(Dataset):
    """Base: `_load(index)` gives (PIL image, raw target, where); targets that are paths are
    mask files, read with the image's geometry."""

    def __init__(self, contract):
        self.contract = contract

    def _load(self, index: int):
        raise NotImplementedError

    def __getitem__(self, index: int):
        image, target, where = self._load(index)
        try:
            x = torch.from_numpy(image_to_input(image, self.contract))
            return x, self._target(target, image, where, geometry=True)
        except ImageError as error:
            raise DataError(f"{where}: {error}") from error

    def augment_sample(self, index: int, geometry: bool = True):
        """(uint8 [C, H, W] pixels, target) with the preprocess applied when `geometry`, else
        at the image's own size (random_resized_crop then gives the input's size)."""
        image, target, where = self._load(index)
        try:
            picture = preprocess_image(image, self.contract, crop=geometry)
            return torch.from_numpy(pixels(picture)), self._target(target, image, where, geometry)
        except ImageError as error:
            raise DataError(f"{where}: {error}") from error

    def _target(self, target, image, where: str, geometry: bool):
        if not isinstance(target, Path):
            return target if isinstance(target, torch.Tensor) else torch.tensor(target)
        mask = open_mask(target)
        if mask.size != image.size:
            raise DataError(
                f"mask {target} is {mask.size[0]}x{mask.size[1]} but its image {where} is "
                f"{image.size[0]}x{image.size[1]}"
            )
        return torch.from_numpy(mask_to_target(mask, self.contract, crop=geometry))


def open_mask(path: Path):
    try:
        return open_image(path)
    except ImageError as error:
        raise DataError(f"mask {path}: {error}") from error


class FilesDataset(ImageDataset):
    """Image files with their targets: class indices, multi-hot tensors, or mask paths."""

    def __init__(self, items: list[tuple[Path, object]], contract):
        super().__init__(contract)
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int):
        path, target = self.items[index]
        try:
            return open_image(path), target, str(path)
        except ImageError as error:
            raise DataError(f"{path}: {error}") from error


class TorchvisionImages(ImageDataset):
    """Some samples of a torchvision dataset of (PIL image, class) pairs."""

    def __init__(self, dataset: Dataset, indices: list[int] | range, contract, name: str):
        super().__init__(contract)
        self.dataset, self.indices, self.name = dataset, indices, name

    def __len__(self) -> int:
        return len(self.indices)

    def _load(self, index: int):
        image, label = self.dataset[self.indices[index]]
        return image, int(label), f"{self.name}[{self.indices[index]}]"
