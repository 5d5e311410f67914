"""Data loading throughput (images/s): `nnspec train`'s loader against a hand-written torchvision
ImageFolder + DataLoader, with the same augmentation and the same number of workers.

An image folder of JPEGs is made at run time (no download). Both pipelines decode with Pillow
and run torchvision.transforms.v2 on uint8 tensors: random resized crop to the input size,
horizontal flip, colour jitter, then float32 in [0, 1]. nnspec's side is the trainer's own
path: the spec's `train.augment`, `load_spec_data`, `augment_training_split`, `make_loader`
(which adds the per-sample seeding that makes augmentation reproducible). Rounds alternate
which loader goes first; each times one full epoch; the median images/s per loader and the
ratio nnspec / torchvision are printed (goal >= 0.95). With `--workers 0` the loading runs in
this process and the ratio per second of its CPU time is printed too: on a CPU shared with
other jobs that figure measures the loaders rather than the neighbours.

    python tests/benchmarks/bench_data.py                    # 512 JPEGs 160x120 -> 112x112, 2 workers
    python tests/benchmarks/bench_data.py --workers 0 --images 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

from nnspec.compiler import load_spec
from nnspec.runtime.train.augment import augment_training_split
from nnspec.runtime.train.data import load_spec_data, make_loader

JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4}


def write_jpegs(root: Path, count: int, classes: int, width: int, height: int) -> None:
    """Smooth colour gradients with noise: JPEG-compressible like photographs, not flat."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 255, size=3)
        base = np.stack([a * xx, b * yy, c * (1 - xx)], axis=-1)
        noisy = base + rng.normal(0, 12, size=base.shape)
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
            folder / f"{i}.jpg", quality=90)


def nnspec_loader(root: Path, args) -> DataLoader:
    spec = load_spec({
        "nnspec": 1, "name": "bench", "input": {"shape": [3, args.input, args.input],
                                                "range": [0, 1]},
        "network": ["global_avg_pool", {"linear": {"out": args.classes}}],
        "train": {"val_fraction": 0.0, "test_fraction": 0.0, "augment": [
            "random_resized_crop", "horizontal_flip", {"color_jitter": JITTER}]},
    })  # fmt: skip
    splits = load_spec_data(spec, str(root), output_shape=(args.classes,))
    augment_training_split(splits, spec, spec.train, seed=0)
    return make_loader(splits.train, args.batch, train=True, num_workers=args.workers)


def torchvision_loader(root: Path, args) -> DataLoader:
    transform = v2.Compose([
        v2.ToImage(), v2.RandomResizedCrop(args.input, antialias=True),
        v2.RandomHorizontalFlip(), v2.ColorJitter(**JITTER),
        v2.ToDtype(torch.float32, scale=True),
    ])  # fmt: skip
    dataset = datasets.ImageFolder(str(root), transform=transform)
    return DataLoader(dataset, batch_size=args.batch, shuffle=True, drop_last=True,
                      num_workers=args.workers)  # fmt: skip


def epoch_rate(loader: DataLoader, epoch: int) -> tuple[float, float]:
    """(images per second of wall time, per second of this process's CPU time)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    started, cpu, count = time.perf_counter(), time.process_time(), 0
    for x, _ in loader:
        count += len(x)
    return count / (time.perf_counter() - started), count / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--input", type=int, default=112, help="crop size (the spec's H, W)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="nnspec-bench-data-") as tmp:
        root = Path(tmp)
        write_jpegs(root, args.images, args.classes, args.width, args.height)
        loaders = {"nnspec": nnspec_loader(root, args), "torchvision": torchvision_loader(root, args)}
        for loader in loaders.values():
            epoch_rate(loader, 0)  # warm-up: workers start, files enter the page cache
        rates = {name: [] for name in loaders}
        cpu_rates = {name: [] for name in loaders}
        for round_ in range(args.rounds):
            order = list(loaders) if round_ % 2 == 0 else list(reversed(loaders))
            for name in order:
                wall, cpu = epoch_rate(loaders[name], round_ + 1)
                rates[name].append(wall)
                cpu_rates[name].append(cpu)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    ratio = medians["nnspec"] / medians["torchvision"]
    for name, value in medians.items():
        print(f"{name:12s} {value:8.1f} images/s  (rounds: "
              f"{', '.join(f'{v:.0f}' for v in rates[name])})")  # fmt: skip
    print(f"ratio nnspec / torchvision: {ratio:.3f} (goal >= 0.95)")
    result = {"images": args.images, "input": args.input, "batch": args.batch,
              "workers": args.workers, "images_per_second": medians, "ratio": ratio}  # fmt: skip
    if args.workers == 0:
        cpu = {name: statistics.median(values) for name, values in cpu_rates.items()}
        result["cpu_ratio"] = cpu["nnspec"] / cpu["torchvision"]
        print(f"ratio per CPU second: {result['cpu_ratio']:.3f} ({cpu['nnspec']:.0f} vs "
              f"{cpu['torchvision']:.0f} images per CPU second)")
    out = Path(__file__).parent / "_out"
    out.mkdir(exist_ok=True)
    (out / "bench_data.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
