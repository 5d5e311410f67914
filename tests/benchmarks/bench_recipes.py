"""Recipes benchmark: what EMA, gradient accumulation and tracking cost a training run, and the
Ray Tune sweep backend against the local one.

Run: python tests/benchmarks/bench_recipes.py [--epochs N] [--rounds N] [--skip-ray]. Everything runs in this
process and one thread per run (OMP_NUM_THREADS=1); each figure is a ratio to a reference
measured in the same run. Results land in tests/benchmarks/_out/recipes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import torch  # noqa: E402

from nnspec.compiler import load_spec  # noqa: E402
from nnspec.runtime.lab import sweep  # noqa: E402
from nnspec.runtime.train import TrainOptions, train  # noqa: E402

OUT = Path(__file__).parent / "_out" / "recipes"
SPEC = Path(__file__).parents[2] / "specs" / "digits_cnn.yaml"
VARIANTS = {
    "plain": ([], []),
    "ema": (["train.ema={decay: 0.999}"], []),
    "accumulate 4 (batch 8)": (["train.accumulate=4", "train.batch_size=8"], []),
    "batch 8": (["train.batch_size=8"], []),
    "mlflow": ([], ["mlflow"]),
    "wandb (offline)": ([], ["wandb"]),
}


def run_variant(name: str, overrides: list[str], track: list[str], epochs: int) -> dict:
    out = OUT / "runs" / name.replace(" ", "_")
    shutil.rmtree(out, ignore_errors=True)
    spec = load_spec(str(SPEC), overrides=overrides)
    options = TrainOptions(out=out, epochs=epochs, progress=False, track=track)
    started = time.perf_counter()
    final = train(spec, options, log=lambda _: None)
    return {"train": final["train_seconds"], "total": time.perf_counter() - started}


def bench_training(epochs: int, rounds: int) -> None:
    torch.set_num_threads(1)
    run_variant("warm-up", [], [], 1)  # first-use imports (TensorBoard, ...) out of the figures
    results = {}
    for _ in range(rounds):  # interleaved rounds; the fastest of each variant counts
        for name, args in VARIANTS.items():
            r = run_variant(name, *args, epochs)
            best = results.setdefault(name, r)
            results[name] = {k: min(best[k], r[k]) for k in r}
    base = results["plain"]
    print(f"digits CNN, {epochs} epochs, one thread, best of {rounds} interleaved rounds")
    print(f"{'variant':26} {'train s':>8} {'ratio':>6} {'session s':>10} {'ratio':>6}")
    for name, r in results.items():
        print(f"{name:26} {r['train']:8.2f} {r['train'] / base['train']:6.2f} "
              f"{r['total']:10.2f} {r['total'] / base['total']:6.2f}")


def bench_sweep(epochs: int) -> None:
    settings = sweep.SweepSettings(spec=str(SPEC), epochs=epochs)
    runs = sweep.plan_runs(
        sweep.grid_points(sweep.parse_grid(["optimizer.lr=0.1,0.05,0.02,0.01"])), [0, 1]
    )
    seconds = {}
    for backend in ("local", "ray"):
        out = OUT / f"sweep_{backend}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        outcomes = sweep.execute_sweep(backend, runs, out, settings, sweep.BackendOptions(parallel=2))
        seconds[backend] = time.perf_counter() - started
        assert all(o.status == "done" for o in outcomes), outcomes
    print(f"sweep of 8 digits CNN runs x {epochs} epochs, 2 at a time")
    print(f"local (nnspec train processes): {seconds['local']:7.1f} s")
    print(f"ray (local instance, started and stopped inside): {seconds['ray']:7.1f} s "
          f"({seconds['ray'] / seconds['local']:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    os.chdir(OUT)  # MLflow's default store (mlruns/) lands here
    bench_training(args.epochs, args.rounds)
    if not args.skip_ray:
        bench_sweep(args.epochs)


if __name__ == "__main__":
    main()
