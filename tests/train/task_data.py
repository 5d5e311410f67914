"""Small data made on the fly for the task tests: the two-input example's .npz, image folders
for segmentation and multilabel CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_two_stream_npz(path: Path, n: int = 384, seed: int = 0) -> Path:
    """`image` [N, 1, 16, 16] in [0, 1] with a bright square where the class says (top-left,
    centre, bottom-right), `features` [N, 6] whose first three hint at the class, `y` [N]."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    image = rng.uniform(0, 0.3, size=(n, 1, 16, 16)).astype(np.float32)
    for i, label in enumerate(y):
        top = (1, 6, 11)[label]
        image[i, 0, top : top + 4, top : top + 4] = rng.uniform(0.7, 1.0)
    features = rng.normal(0, 1, size=(n, 6)).astype(np.float32)
    features[np.arange(n), y] += 1.5
    np.savez(path, image=image, features=features, y=y)
    return path


def write_segmentation_folder(root: Path, count: int = 6, size: tuple[int, int] = (20, 24),
                              seed: int = 0) -> list[np.ndarray]:  # fmt: skip
    """`root/images/i.png` (RGB) + `root/masks/i.png` (grey class indices 0..2, 255 on two
    border rows to ignore); returns the masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    masks = []
    for i in range(count):
        mask = rng.integers(0, 3, size=size).astype(np.uint8)
        mask[:2] = 255
        image = np.stack([(mask.astype(np.int64) * 100) % 256] * 3, axis=-1).astype(np.uint8)
        Image.fromarray(image, "RGB").save(root / "images" / f"{i}.jpg" if i % 2 else
                                           root / "images" / f"{i}.png")  # fmt: skip
        Image.fromarray(mask, "L").save(root / "masks" / f"{i}.png")
        masks.append(mask)
    return masks
