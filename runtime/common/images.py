"""Image files become model inputs the one way the spec's input contract says, in training,
`nnspec predict` and `nnspec serve` alike (numpy and Pillow only: the server never imports torch).

The contract is the compiler's `InputSpec`: `shape` [C, H, W] with C = 1 (grey) or 3 (RGB),
`range` [low, high] of the raw values the model takes, and `preprocess` (resize, then center
crop, as torchvision's Resize and CenterCrop do). Without a `preprocess`, an image is resized
to H x W. 8-bit pixels p then become `low + p / 255 * (high - low)`; without a `range`, [0, 1]
(torchvision's ToTensor). Masks (segmentation targets) take the same geometry with
nearest-neighbour resampling, so each pixel keeps a class index.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
UNIT_RANGE = (0.0, 1.0)
_MODES = {1: "L", 3: "RGB"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """An image that cannot be read, or cannot feed the input (the caller words the error)."""


def open_image(source: str | Path | bytes):
    """A decoded PIL image from a file or from encoded bytes (PNG, JPEG, ...).

    Raises:
        ImageError: the data is not an image Pillow can decode (or is a decompression bomb).
    """
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
        image.load()
        return image
    except Exception as error:  # Pillow raises OSError, SyntaxError, DecompressionBombError...
        raise ImageError(f"cannot be read as an image ({type(error).__name__}: {error})") from error


def value_range(contract) -> tuple[float, float]:
    """The input's declared [low, high], or [0, 1] when it declares none."""
    return tuple(contract.range) if contract.range is not None else UNIT_RANGE


def resize_for(contract, image_size: tuple[int, int]) -> tuple[int, int] | None:
    """(width, height) an image of `image_size` (width, height) is resized to, or None."""
    height, width = contract.shape[1:]
    pre = contract.preprocess
    if pre is None:
        return (width, height)
    if pre.resize is None:
        return None
    if isinstance(pre.resize, int):  # shorter side to `resize`, as torchvision's Resize(int)
        w, h = image_size
        if w <= h:
            return (pre.resize, int(pre.resize * h / w))
        return (int(pre.resize * w / h), pre.resize)
    return (pre.resize[1], pre.resize[0])


def preprocess_image(image, contract, *, resample=None, crop: bool = True):
    """`image` in the input's channels (grey or RGB) and geometry (resize, center crop).

    Args:
        contract: the input's InputSpec.
        resample: a PIL resampling filter (default: the contract's interpolation).
        crop: apply the center crop (training with random_resized_crop skips the geometry).
    """
    from PIL import Image

    channels = contract.shape[0]
    if channels not in _MODES:
        raise ImageError(f"images feed 1 or 3 channels, but the input has {channels}")
    image = _eight_bit(image).convert(_MODES[channels])
    if not crop:
        return image
    pre = contract.preprocess
    if resample is None:
        name = pre.interpolation if pre is not None else "bilinear"
        resample = getattr(Image.Resampling, name.upper())
    size = resize_for(contract, image.size)
    if size is not None and size != image.size:
        image = image.resize(size, resample)
    if pre is not None and pre.center_crop is not None:
        image = center_crop(image, tuple(contract.shape[1:]))
    return image


def center_crop(image, size: tuple[int, int]):
    """The middle `size` (H, W) of a PIL image, padded with zeros where it is smaller
    (torchvision's CenterCrop rounding)."""
    height, width = size
    w, h = image.size
    if w < width or h < height:
        from PIL import Image

        padded = Image.new(image.mode, (max(w, width), max(h, height)))
        padded.paste(image, ((max(w, width) - w) // 2, (max(h, height) - h) // 2))
        image, (w, h) = padded, padded.size
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return image.crop((left, top, left + width, top + height))


def pixels(image) -> np.ndarray:
    """A grey or RGB PIL image as uint8 [C, H, W]."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def to_input_range(values: np.ndarray, contract) -> np.ndarray:
    """8-bit pixel values (any dtype) as float32 in the input's range."""
    low, high = value_range(contract)
    scaled = values.astype(np.float32) / np.float32(255.0)
    if (low, high) == UNIT_RANGE:
        return scaled
    return (np.float32(low) + scaled * np.float32(high - low)).astype(np.float32)


def image_to_input(image, contract) -> np.ndarray:
    """A PIL image as the model's float32 [C, H, W] input, as the contract says."""
    array = pixels(preprocess_image(image, contract))
    expected = tuple(contract.shape)
    if array.shape != expected:  # a crop of a different size cannot happen; be explicit anyway
        raise ImageError(f"became {list(array.shape)}, not the input's {list(expected)}")
    return to_input_range(array, contract)


def mask_to_target(mask, contract, *, crop: bool = True) -> np.ndarray:
    """A mask image (grey or palette: one class index per pixel) as int64 [H, W], with the
    image's geometry and nearest-neighbour resampling."""
    from PIL import Image

    if mask.mode not in ("L", "P", "I", "I;16", "1"):
        raise ImageError(f"a mask must be a grey or palette image of class indices, not {mask.mode}")
    if mask.mode == "1":
        mask = mask.convert("L")
    if crop:
        size = resize_for(contract, mask.size)
        if size is not None and size != mask.size:
            mask = mask.resize(size, Image.Resampling.NEAREST)
        pre = contract.preprocess
        if pre is not None and pre.center_crop is not None:
            mask = center_crop(mask, tuple(contract.shape[1:]))
    return np.asarray(mask).astype(np.int64)


def values_outside(array: np.ndarray, contract) -> tuple[float, float] | None:
    """(min, max) of `array` when it holds values outside the declared range (or values that
    are not finite), else None. Inputs without a declared range are only checked for NaN/inf."""
    if array.size == 0 or not np.issubdtype(array.dtype, np.number):
        return None
    finite = bool(np.isfinite(array).all()) if np.issubdtype(array.dtype, np.floating) else True
    low, high = float(array.min()), float(array.max())
    if not finite:
        return (low, high)
    if contract.range is None:
        return None
    tolerance = 1e-6 * max(1.0, abs(contract.range[1] - contract.range[0]))
    if low < contract.range[0] - tolerance or high > contract.range[1] + tolerance:
        return (low, high)
    return None


def _eight_bit(image):
    """16-bit grey images reduced to 8 bits (v / 257), so every image has 0..255 pixels."""
    if image.mode not in _SIXTEEN_BIT:
        return image
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), "L")
