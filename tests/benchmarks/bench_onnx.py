"""onnxruntime (CPU) vs PyTorch eager latency for exported zoo models, float32 and int8.

    python tests/benchmarks/bench_onnx.py [--models resnet18 resnet50] [--batches 1 8]
                                          [--threads N] [--seconds 3] [--no-int8]

Same process, same thread count for both engines, timed in alternation (torch.set_num_threads and onnxruntime's
intra_op_num_threads). PyTorch runs the CompiledModel as trained (eval mode, batch norm
unfolded); onnxruntime runs what `nnspec export` writes (batch norm folded, all graph
optimisations on). int8 is static QDQ quantisation calibrated on random inputs around the
model's normalisation (latency only: random weights have no accuracy to keep). Results go to
stdout and tests/benchmarks/_out/bench_onnx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from nnspec.compiler import build_model
from nnspec.runtime.export.exporter import export_onnx, model_normalization, sample_shape
from nnspec.runtime.export.quantize import quantization_data, quantize_int8

SPECS = Path(__file__).resolve().parents[2] / "specs"
OUT = Path(__file__).resolve().parent / "_out"
GOAL = 1.4


def interleaved_medians(runs: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Median wall time (ms) of each callable, timed in alternation (one call of each per
    round) so that load from other processes shifts all of them alike."""
    for run in runs.values():  # warm-up: first calls allocate and pick kernels
        run()
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    deadline = time.perf_counter() + seconds * len(runs)
    while len(times[next(iter(runs))]) < 5 or time.perf_counter() < deadline:
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            times[label].append((time.perf_counter() - start) * 1000)
    return {label: statistics.median(t) for label, t in times.items()}


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def bench_model(
    name: str, batches: list[int], threads: int, seconds: float, int8: bool
) -> list[dict]:
    model = build_model(SPECS / f"{name}.yaml").eval()
    OUT.mkdir(exist_ok=True)
    fp32 = OUT / f"{name}.onnx"
    start = time.perf_counter()
    result = export_onnx(model, fp32)
    print(f"{name}: exported in {time.perf_counter() - start:.1f} s; parity {result.parity}")
    sessions = {"onnxruntime": ort_session(fp32, threads)}
    if int8:
        int8_path = OUT / f"{name}.int8.onnx"
        data = quantization_data(sample_shape(model), None, model_normalization(model))
        quantize_int8(fp32, int8_path, data.calibration_batches()[:2])
        sessions["onnxruntime int8"] = ort_session(int8_path, threads)
    rows = []
    rng = np.random.default_rng(0)
    for batch in batches:
        x = rng.standard_normal((batch, *sample_shape(model))).astype(np.float32)
        xt = torch.from_numpy(x)
        runs = {"torch": partial(model, xt)}
        runs.update({label: partial(s.run, None, {"input": x}) for label, s in sessions.items()})
        with torch.inference_mode():
            medians = interleaved_medians(runs, seconds)
        row = {"model": name, "batch": batch, "threads": threads}
        row.update({f"{label}_ms": ms for label, ms in medians.items()})
        rows.append(row)
        ratios = ", ".join(
            f"{label} {row['torch_ms'] / row[f'{label}_ms']:.2f}x ({row[f'{label}_ms']:.1f} ms)"
            for label in sessions
        )
        print(f"  batch {batch}: torch eager {row['torch_ms']:.1f} ms; {ratios}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing budget per measurement")
    parser.add_argument("--no-int8", dest="int8", action="store_false")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} thread(s)")
    rows = []
    for name in args.models:
        rows += bench_model(name, args.batches, args.threads, args.seconds, args.int8)
    print(f"\nspeed-up of onnxruntime float32 over PyTorch eager (goal >= {GOAL}x):")
    for row in rows:
        ratio = row["torch_ms"] / row["onnxruntime_ms"]
        verdict = "ok" if ratio >= GOAL else "below goal"
        print(f"  {row['model']:>9} batch {row['batch']}: {ratio:.2f}x  {verdict}")
    (OUT / "bench_onnx.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
