"""`train.augment`: the training split's augmentation, built from the spec on
torchvision.transforms.v2.

Each entry of the spec's list becomes one v2 transform, applied in order to every training
sample; masks travel as `tv_tensors.Mask`, so flips, crops and rotations move them with their
images (and colour changes leave them alone). `mixup` and `cutmix` act on whole batches
(`BatchMixer`), after the per-sample pipeline; with both, each batch gets one of them.

Determinism: a sample's randomness is drawn from (seed, epoch, index) alone (the sampler hands
the dataset `(index, epoch)` keys), and a batch's from (seed, epoch, batch index), each under
a forked RNG. The same run therefore sees the same augmented samples whatever the number of
DataLoader workers, and a resumed run sees what the uninterrupted one would have.

Pixels: image files reach the pipeline as 8-bit pixels (before they are scaled into the
input's range, as torchvision pipelines run on uint8); arrays reach it scaled from their
declared `range` to [0, 1] and are scaled back afterwards, so colour operations see the
values they expect.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from nnspec.compiler.errors import DataError
from nnspec.compiler.task_check import COLOUR
from nnspec.compiler.training_schema import BATCH_AUGMENTS

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads nearby (seed, epoch, index) apart


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, different for every nearby combination."""
    value = 0
    for part in parts:
        value = ((value ^ (int(part) & (2**64 - 1))) * _MIX + 1) % 2**64
    return value % 2**63


def _sample_transform(entry, size: tuple[int, int], mask_fill: int):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    builders = {
        "random_resized_crop": lambda e: v2.RandomResizedCrop(
            size, scale=tuple(e.scale), ratio=tuple(e.ratio), antialias=True),
        "horizontal_flip": lambda e: v2.RandomHorizontalFlip(e.p),
        "vertical_flip": lambda e: v2.RandomVerticalFlip(e.p),
        "rotation": lambda e: v2.RandomRotation(
            e.degrees, fill={tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}),
        "color_jitter": lambda e: v2.ColorJitter(e.brightness, e.contrast, e.saturation, e.hue),
        "trivial_augment": lambda e: v2.TrivialAugmentWide(e.num_magnitude_bins),
        "rand_augment": lambda e: v2.RandAugment(e.num_ops, e.magnitude, e.num_magnitude_bins),
        "random_erasing": lambda e: v2.RandomErasing(e.p, tuple(e.scale), tuple(e.ratio)),
    }  # fmt: skip
    return builders[entry.type](entry)


@dataclass
class Augmentation:
    """The per-sample pipeline (or None) and the batch-level mixing (or None) of a spec."""

    sample: object | None
    batch: object | None
    crops: bool
    """The pipeline has random_resized_crop: images enter it at their own size, without the
    input's `preprocess` geometry (the crop produces the input's size)."""
    colour: bool


def build_augmentation(entries, contract, task, num_classes: int | None) -> Augmentation | None:
    """The v2 transforms of `train.augment` for an input `contract` and the spec's task."""
    if not entries:
        return None
    from torchvision.transforms import v2

    size = tuple(contract.shape[1:])
    ignore = getattr(task, "ignore_index", None)
    mask_fill = ignore if ignore is not None and ignore >= 0 else 0
    per_sample = [_sample_transform(e, size, mask_fill) for e in entries
                  if e.type not in BATCH_AUGMENTS]  # fmt: skip
    mixers = []
    for entry in (e for e in entries if e.type in BATCH_AUGMENTS):
        if not num_classes:
            raise DataError(f"{entry.type} needs the number of classes, which the data does not say")
        cls = v2.MixUp if entry.type == "mixup" else v2.CutMix
        mixers.append(cls(alpha=entry.alpha, num_classes=num_classes))
    batch = None if not mixers else mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)
    return Augmentation(
        sample=v2.Compose(per_sample) if per_sample else None,
        batch=batch,
        crops=any(e.type == "random_resized_crop" for e in entries),
        colour=any(e.type in COLOUR for e in entries),
    )


class AugmentedDataset(Dataset):
    """A training split whose samples pass through the augmentation pipeline.

    Keys are `(index, epoch)` (see `EpochKeyedSampler`) or a bare index (epoch 0).
    """

    keyed_by_epoch = True

    def __init__(self, base: Dataset, augmentation: Augmentation, contract, seed: int,
                 masks: bool):  # fmt: skip
        if not hasattr(base, "augment_sample"):
            raise DataError(f"{type(base).__name__} samples cannot be augmented")
        if augmentation.colour and contract.range is None and not _is_images(base):
            raise DataError(
                "colour augmentation needs the range of the input's values, and the spec's "
                "input declares none\n    hint: add input.range, e.g. [0, 16] for the digits"
            )
        self.base, self.augmentation, self.contract = base, augmentation, contract
        self.seed, self.masks = seed, masks
        self.range = tuple(contract.range) if contract.range is not None else (0.0, 1.0)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(derive_seed(self.seed, epoch, index))
            return self._augmented(index)

    def _augmented(self, index: int):
        from torchvision import tv_tensors

        image, target = self.base.augment_sample(index, geometry=not self.augmentation.crops)
        low, high = self.range
        eight_bit = image.dtype == torch.uint8
        picture = tv_tensors.Image(image if eight_bit else (image - low) / (high - low))
        if self.masks:
            target = tv_tensors.Mask(target)
        if self.augmentation.sample is not None:
            with warnings.catch_warnings():
                # RandomErasing leaves masks as they are, which is what segmentation wants
                warnings.filterwarnings("ignore", message=".*passing through inputs of type")
                picture, target = self.augmentation.sample(picture, target)
        values = picture.as_subclass(torch.Tensor)
        values = values.float() / 255.0 if eight_bit else values
        if (low, high) != (0.0, 1.0):
            values = low + values * (high - low)
        if self.masks:
            target = target.as_subclass(torch.Tensor)
        return values, target


def _is_images(dataset: Dataset) -> bool:
    from nnspec.runtime.train.data.images import ImageDataset

    return isinstance(dataset, ImageDataset)


class BatchMixer:
    """MixUp / CutMix on a batch, seeded by (seed, epoch, batch index): (x, y) -> (x, soft y)."""

    def __init__(self, transform, seed: int):
        self.transform, self.seed = transform, seed

    def __call__(self, x: torch.Tensor, y: torch.Tensor, epoch: int, batch: int):
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(derive_seed(self.seed, epoch, batch, 1))
            return self.transform(x, y)


def augment_training_split(splits, spec, settings, seed: int):
    """Replace `splits.train` by its augmented form and return the batch mixer (or None),
    as the spec's `train.augment` (in `settings`) says."""
    contract = next(iter(spec.input_specs.values()))
    augmentation = build_augmentation(settings.augment, contract, spec.task, splits.num_classes)
    if augmentation is None:
        return None
    if augmentation.sample is not None or augmentation.crops:
        masks = spec.task.type == "segmentation"
        splits.train = AugmentedDataset(splits.train, augmentation, contract, seed, masks)
    return BatchMixer(augmentation.batch, seed) if augmentation.batch is not None else None
