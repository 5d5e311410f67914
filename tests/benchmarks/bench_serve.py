"""Load test of `nnspec serve`: concurrent tritonclient clients against a real server process.

    python tests/benchmarks/bench_serve.py [--model resnet18|digits] [--clients 32]

Exports the model (random weights) to a temporary folder, starts `nnspec serve` on a free
loopback port, runs `--clients` closed-loop clients (each sends one image, waits for the
answer, repeats) until `--requests` answers or `--max-seconds`, and prints throughput and
p50/p99 latency. It then times raw onnxruntime in this process on the batch size the server
actually ran (its mean from /metrics) and prints the server's throughput as a ratio of it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import tritonclient.http.aio as triton_aio
from tritonclient.http import InferInput


class DigitsCNN(torch.nn.Module):
    """A digits-sized CNN (1x28x28 -> 10), the shape of specs/digits_cnn.yaml."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(2),
        )
        self.head = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64 * 7 * 7, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def export_onnx(kind: str, folder: Path) -> tuple[Path, tuple[int, ...]]:
    torch.manual_seed(0)
    if kind == "resnet18":
        import torchvision

        model, sample = torchvision.models.resnet18(weights=None), (3, 224, 224)
    else:
        model, sample = DigitsCNN(), (1, 28, 28)
    path = folder / f"{kind}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.randn(2, *sample),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path, sample


def start_server(model: Path, max_batch_size: int, delay_ms: float):
    command = [
        sys.executable, "-m", "nnspec.runtime.cli", "serve", str(model), "--port", "0",
        "--max-batch-size", str(max_batch_size), "--max-queue-delay-ms", str(delay_ms),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    found = re.search(r"http://(127\.0\.0\.1:\d+)", process.stdout.readline())
    if not found:
        process.kill()
        raise SystemExit("the server did not start")
    return process, found.group(1)


async def wait_ready(url: str) -> None:
    async with triton_aio.InferenceServerClient(url) as client:
        for _ in range(600):
            try:
                if await client.is_server_ready():
                    return
            except Exception:  # not listening yet
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("the server never became ready")


async def run_clients(url, name, sample, clients, requests, max_seconds):
    """Closed-loop clients; returns (wall seconds, list of per-request latencies)."""
    image = np.random.default_rng(0).standard_normal((1, *sample)).astype(np.float32)
    latencies: list[float] = []
    budget = iter(range(requests))
    deadline = time.perf_counter() + max_seconds

    async def client_loop(client):
        tensor = InferInput("input", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image, binary_data=True)
        while next(budget, None) is not None and time.perf_counter() < deadline:
            started = time.perf_counter()
            await client.infer(name, [tensor])
            latencies.append(time.perf_counter() - started)

    async with triton_aio.InferenceServerClient(url, conn_limit=clients) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        return time.perf_counter() - started, latencies


def batch_stats(url: str) -> tuple[float, float]:
    import httpx

    text = httpx.get(f"http://{url}/metrics").text

    def value(metric):
        found = re.search(rf"^{metric}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return value("nnspec_batch_size_sum"), value("nnspec_batch_size_count")


def raw_onnxruntime(model: Path, sample, batch: int, images: int) -> float:
    """Images per second of onnxruntime alone on `batch`-row calls, in this process."""
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((batch, *sample)).astype(np.float32)
    session.run(None, {"input": x})  # warm-up
    calls = max(3, images // batch)
    started = time.perf_counter()
    for _ in range(calls):
        session.run(None, {"input": x})
    return calls * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["resnet18", "digits"], default="resnet18")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=None, help="answers to wait for")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    args = parser.parse_args()
    requests = args.requests or (256 if args.model == "resnet18" else 4096)

    with tempfile.TemporaryDirectory() as folder:
        model, sample = export_onnx(args.model, Path(folder))
        process, url = start_server(model, args.max_batch_size, args.max_queue_delay_ms)
        try:
            asyncio.run(wait_ready(url))
            # Warm-up: one round per client, not measured.
            asyncio.run(run_clients(url, args.model, sample, args.clients, args.clients, 60))
            rows_before, calls_before = batch_stats(url)
            wall, latencies = asyncio.run(
                run_clients(url, args.model, sample, args.clients, requests, args.max_seconds)
            )
            rows_after, calls_after = batch_stats(url)
        finally:
            process.terminate()
            process.wait(timeout=60)
        mean_batch = (rows_after - rows_before) / max(1.0, calls_after - calls_before)
        served = len(latencies) / wall
        batch = max(1, round(mean_batch))
        raw = raw_onnxruntime(model, sample, batch, len(latencies))
        raw_max = raw_onnxruntime(model, sample, args.max_batch_size, len(latencies))

    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(f"model {args.model}, {args.clients} clients, {len(latencies)} requests in {wall:.1f} s")
    print(f"server throughput: {served:.1f} req/s  (1 image per request)")
    print(f"latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"mean rows per onnxruntime call in the server: {mean_batch:.1f}")
    print(f"raw onnxruntime, batch {batch}: {raw:.1f} images/s -> ratio {served / raw:.2f}")
    print(
        f"raw onnxruntime, batch {args.max_batch_size}: {raw_max:.1f} images/s -> ratio {served / raw_max:.2f}"
    )


if __name__ == "__main__":
    main()
