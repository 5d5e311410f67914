"""Sweep benchmark: 8 short `nnspec train` runs with --parallel 2 vs one after another.

Run: python tests/benchmarks/bench_sweep.py [--epochs N]. Goal: parallel wall time <= 0.6x
sequential on 2 cores. Prints both times and the ratio; results land in tests/benchmarks/_out.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from nnspec.runtime.lab import sweep

OUT = Path(__file__).parent / "_out" / "sweep"
SPEC = """\
nnspec: 1
name: bench_mlp
input: {shape: [1, 8, 8]}
normalize: auto
network:
  - flatten
  - linear: {out: 64}
  - relu
  - linear: {out: 10}
optimizer: {type: sgd, lr: 0.05, momentum: 0.9}
train: {batch_size: 32}
"""


def timed_sweep(name: str, parallel: int, epochs: int) -> float:
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec = out / "spec.yaml"
    spec.write_text(SPEC)
    settings = sweep.SweepSettings(spec=str(spec), epochs=epochs, data="digits")
    axes = sweep.parse_grid(["optimizer.lr=0.1,0.05,0.02,0.01"])
    runs = sweep.plan_runs(sweep.grid_points(axes), [0, 1])
    runner = sweep.subprocess_runner(settings, single_thread=parallel > 1)
    start = time.perf_counter()
    outcomes = sweep.run_sweep(runs, out, runner, parallel)
    seconds = time.perf_counter() - start
    failed = [o.run.relative_dir for o in outcomes if o.status != "done"]
    if failed:
        raise SystemExit(f"runs failed: {failed}; see their train.log under {out}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    sequential = timed_sweep("sequential", 1, args.epochs)
    parallel = timed_sweep("parallel2", 2, args.epochs)
    print(f"8 runs x {args.epochs} epochs (digits MLP)")
    print(f"sequential:  {sequential:7.1f} s")
    print(f"--parallel 2: {parallel:7.1f} s")
    print(f"ratio: {parallel / sequential:.2f}x (goal <= 0.60x)")


if __name__ == "__main__":
    main()
