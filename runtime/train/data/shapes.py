"""`shapes[:n=512,seed=0,max_shapes=3]`: procedurally drawn circles, squares and triangles on a
noisy background, with their per-pixel masks, for every task without a download:

- segmentation: the mask (0 background, 1 circle, 2 square, 3 triangle; as many kinds as the
  output has classes minus one),
- multilabel: which kinds are visible,
- regression: the fraction of the image each kind covers (one value per output element),
- classification: the kind of the one shape drawn.

Images take the spec's input size and channels (grey, or a random colour per shape in RGB)
and are converted into its `range` like image files.
"""

from __future__ import annotations

import numpy as np
import torch

from nnspec.compiler.errors import DataError
from nnspec.runtime.common.images import to_input_range
from nnspec.runtime.train.data.base import (
    DataRequest,
    DataSplits,
    array_splits,
    int_option,
    parse_options,
)

TASKS = ("segmentation", "multilabel", "regression", "classification")
KINDS = ("circle", "square", "triangle")
OPTIONS = {"n", "seed", "max_shapes"}


def matches(source: str) -> bool:
    return source == "shapes" or source.startswith("shapes:")


def open_source(source: str, request: DataRequest) -> DataSplits:
    options = parse_options(source.partition(":")[2], source, OPTIONS)
    n = int_option(options, "n", 512, source)
    seed = int_option(options, "seed", 0, source)
    max_shapes = int_option(options, "max_shapes", 3, source)
    contract = request.single
    shape = tuple(contract.shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or min(shape[1:]) < 16:
        raise DataError(f"shapes draws images [1 or 3, H, W] with H, W >= 16, not {list(shape)}")
    kinds = _kinds(request)
    single = request.task == "classification"
    rng = np.random.default_rng(seed)
    images = np.empty((n, *shape), dtype=np.uint8)
    masks = np.empty((n, *shape[1:]), dtype=np.int64)
    for i in range(n):
        count = 1 if single else int(rng.integers(1, max(1, max_shapes) + 1))
        images[i], masks[i] = draw(rng, shape, kinds, count)
    x = torch.from_numpy(to_input_range(images, contract))
    labels = list(KINDS[:kinds])
    if request.task == "segmentation":
        return array_splits(x, torch.from_numpy(masks), request, source,
                            ["background", *labels], num_classes=kinds + 1)  # fmt: skip
    present = np.stack([(masks == k + 1).any(axis=(1, 2)) for k in range(kinds)], axis=1)
    if request.task == "multilabel":
        y = torch.from_numpy(present.astype(np.float32))
        return array_splits(x, y, request, source, labels, num_classes=kinds)
    if request.task == "regression":
        pixels = float(shape[1] * shape[2])
        cover = np.stack([(masks == k + 1).sum(axis=(1, 2)) / pixels for k in range(kinds)], 1)
        y = torch.from_numpy(cover.astype(np.float32)).reshape(n, *request.output_shape)
        return array_splits(x, y, request, source)
    y = torch.from_numpy(present.argmax(axis=1))
    return array_splits(x, y, request, source, labels, num_classes=kinds)


def _kinds(request: DataRequest) -> int:
    """How many shape kinds the task's output has room for."""
    out = tuple(request.output_shape or ())
    count = {
        "segmentation": (out[0] - 1) if out else 2,
        "multilabel": out[0] if out else 3,
        "classification": out[0] if out else 3,
        "regression": int(np.prod(out)) if out else 1,
    }[request.task]
    low = 2 if request.task == "classification" else 1
    if not low <= count <= len(KINDS):
        raise DataError(
            f"shapes has {len(KINDS)} kinds ({', '.join(KINDS)}); a {request.task} output "
            f"{list(out)} asks for {count}"
        )
    return count


def draw(rng: np.random.Generator, shape: tuple[int, ...], kinds: int, count: int):
    """One image (uint8 [C, H, W]) with `count` shapes of the first `kinds` kinds, and its
    mask (int64 [H, W]: 0 background, k + 1 for kind k; later shapes cover earlier ones)."""
    channels, height, width = shape
    image = rng.integers(0, 50, size=shape).astype(np.float64)
    mask = np.zeros((height, width), dtype=np.int64)
    rows, cols = np.mgrid[0:height, 0:width]
    for _ in range(count):
        kind = int(rng.integers(0, kinds))
        size = rng.uniform(min(height, width) / 8, min(height, width) / 4)
        cy = rng.uniform(size, height - size)
        cx = rng.uniform(size, width - size)
        if kind == 0:
            inside = (rows - cy) ** 2 + (cols - cx) ** 2 <= size**2
        elif kind == 1:
            inside = (np.abs(rows - cy) <= size * 0.85) & (np.abs(cols - cx) <= size * 0.85)
        else:  # an upright triangle: below the two slanted edges, above the base
            top, base = cy - size, cy + size * 0.8
            slope = (rows - top) / (base - top)
            inside = (rows <= base) & (rows >= top) & (np.abs(cols - cx) <= slope * size)
        colour = rng.integers(140, 256, size=channels)
        image[:, inside] = colour[:, None]
        mask[inside] = kind + 1
    image += rng.normal(0, 8, size=shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask
