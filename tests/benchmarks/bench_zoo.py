"""Compiled zoo models against torchvision's own, in one process: does compiling cost anything?

For each model: forward + backward of one batch, nnspec's compiled module against torchvision's
constructor output, same threads, same input, repetitions interleaved (the order alternates),
median time (and the median of the per-repetition ratios, steadier on a shared machine);
then spec load + build against torchvision's constructor. Goals: step ratio <= 1.03, build
ratio <= 1.1. The nnspec model normalises its input inside; torchvision's step
includes the same normalisation, so both do the same work.

    python tests/benchmarks/bench_zoo.py                     # resnet50 and vit_b_16, batch 1
    python tests/benchmarks/bench_zoo.py --models resnet18 --batch 8 --repeats 11 --threads 2
    python tests/benchmarks/bench_zoo.py --models swin_t maxvit_t    # the windowed examples
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from torchvision import models as tv

from nnspec.compiler import build_model

#: models whose spec is an example rather than a zoo name
EXAMPLES = {name: f"specs/examples/{name}.yaml" for name in ("swin_t", "swin_v2_t", "maxvit_t")}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def train_step(model: torch.nn.Module, forward: Callable[[torch.Tensor], torch.Tensor], x) -> float:
    """Seconds for one forward + backward (gradients cleared first, outside the timing)."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    forward(x).float().sum().backward()
    return time.perf_counter() - start


def interleaved_times(steps: dict[str, Callable[[], float]], repeats: int, warmup: int):
    """Seconds of each step per repetition, alternating the order every repetition."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            times[name].append(steps[name]())
    return times


def compared(model: str, what: str, times: dict[str, list[float]], goal: float) -> dict:
    """Medians of both, their ratio, and the median of the per-repetition ratios.

    On a shared machine the load drifts; the two steps of one repetition run back to back
    under nearly the same load, so the paired ratio is the steadier figure.
    """
    ours, theirs = times["nnspec"], times["torchvision"]
    return {
        "model": model,
        "what": what,
        "nnspec_s": statistics.median(ours),
        "torchvision_s": statistics.median(theirs),
        "ratio": statistics.median(ours) / statistics.median(theirs),
        "paired_ratio": statistics.median(a / b for a, b in zip(ours, theirs, strict=True)),
        "goal": goal,
    }


def bench_step(name: str, batch: int, repeats: int, warmup: int) -> dict:
    nnspec_model = build_model(EXAMPLES.get(name, name)).train()
    tv_model = tv.get_model(name).train()
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    times = interleaved_times(
        {
            "nnspec": lambda: train_step(nnspec_model, nnspec_model, x),
            "torchvision": lambda: train_step(tv_model, lambda r: tv_model((r - MEAN) / STD), x),
        },
        repeats,
        warmup,
    )
    return compared(name, f"forward+backward, batch {batch}", times, goal=1.03)


def bench_build(name: str, repeats: int) -> dict:
    def timed(make: Callable[[], torch.nn.Module]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            make()
            return time.perf_counter() - start

        return run

    times = interleaved_times(
        {
            "nnspec": timed(lambda: build_model(EXAMPLES.get(name, name))),
            "torchvision": timed(lambda: tv.get_model(name)),
        },
        repeats,
        warmup=1,
    )
    return compared(name, "spec load + build (incl. init) vs constructor", times, goal=1.1)


def format_row(r: dict) -> str:
    return (
        f"{r['model']:<10} {r['what']:<46} {r['nnspec_s']:>8.3f}s {r['torchvision_s']:>11.3f}s "
        f"{r['ratio']:>7.3f} {r['paired_ratio']:>7.3f} {r['goal']:>6.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet50", "vit_b_16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.repeats} interleaved repeats")
    print(
        f"{'model':<10} {'what':<46} {'nnspec':>9} {'torchvision':>12} {'ratio':>7} {'paired':>7} {'goal':>6}"
    )
    results = []
    for name in args.models:
        results.append(bench_step(name, args.batch, args.repeats, args.warmup))
        print(format_row(results[-1]), flush=True)
        results.append(bench_build(name, max(3, args.repeats // 2)))
        print(format_row(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
