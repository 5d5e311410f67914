"""Load tests of `nnspec serve`: REST against gRPC against raw onnxruntime, and a version swap.

    python tests/benchmarks/bench_serve.py [--scenario digits|resnet18|swap|all]
        [--clients 32] [--rounds 2] [--server-cpus 0] [--client-cpus 1]

digits    specs/digits_cnn.yaml exported with `nnspec export` (1x8x8 input, initialised
          weights), one `nnspec serve` process answering REST and gRPC; `--clients`
          closed-loop clients (each sends one image, waits for the answer, repeats) over REST
          (tritonclient.http.aio, binary tensors) and then over gRPC (tritonclient.grpc.aio,
          one channel), alternating for `--rounds`. Reports req/s, p50/p99 latency, the mean
          rows per onnxruntime call the server ran (from /metrics), gRPC/REST, and each
          protocol's throughput as a ratio of raw onnxruntime called in this process on the
          server's cores with the same batch size.
resnet18  the same with torchvision's resnet18 (random weights, 3x224x224).
swap      the digits model in a repository at version 1 under closed-loop gRPC load; version 2
          is copied in and loaded (POST .../load) mid-run. Reports failed requests, and p99
          latency of requests sent in the two seconds before the load request against those
          sent from the load request until one second after it returned (the old version
          draining).

`--server-cpus` / `--client-cpus` pin the server process and this process (clients, and the
raw onnxruntime runs, which use the server's cores) to those CPUs; without them everything
shares the machine. The figures say which.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http.aio as http_aio
from tritonclient.grpc import InferInput as GrpcInput
from tritonclient.http import InferInput as HttpInput

ROOT = Path(__file__).resolve().parents[2]


def export_digits(folder: Path) -> tuple[Path, tuple[int, ...]]:
    """specs/digits_cnn.yaml through the real exporter (initialised weights)."""
    path = folder / "digits_cnn.onnx"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "nnspec.runtime.cli", "export", str(ROOT / "specs/digits_cnn.yaml"),
         "-o", str(path)],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return path, tuple(session.get_inputs()[0].shape[1:])


def export_resnet18(folder: Path) -> tuple[Path, tuple[int, ...]]:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = folder / "resnet18.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            torchvision.models.resnet18(weights=None).eval(),
            (torch.randn(2, 3, 224, 224),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path, (3, 224, 224)


class Server:
    """`nnspec serve` in a child process (pinned to `cpus` if given)."""

    def __init__(self, model: Path, cpus: set[int] | None, *options: str):
        command = [sys.executable, "-m", "nnspec.runtime.cli", "serve", str(model),
                   "--port", "0", "--grpc-port", "0", *options]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        banner = self.process.stdout.readline()
        found = re.search(r"http://(\S+) \(REST\) and (\S+) \(gRPC\)", banner)
        if not found:
            self.stop()
            raise SystemExit(f"the server did not start: {banner!r}")
        self.http, self.grpc = found.groups()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=120)


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(f"http://{url}/metrics").text

    def value(metric: str) -> float:
        found = re.search(rf"^{metric}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    return value("nnspec_batch_size_sum"), value("nnspec_batch_size_count")


async def closed_loop(protocol, server, model_name, sample, clients, requests, max_seconds):
    """`clients` closed-loop clients; returns (wall seconds, [(sent at, latency)], failures)."""
    image = np.random.default_rng(0).standard_normal((1, *sample)).astype(np.float32)
    if protocol == "rest":
        client = http_aio.InferenceServerClient(server.http, conn_limit=clients)
        tensor = HttpInput("input", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image, binary_data=True)
    else:
        client = grpc_aio.InferenceServerClient(server.grpc)
        tensor = GrpcInput("input", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
    budget = iter(range(requests))
    deadline = time.perf_counter() + max_seconds
    latencies: list[tuple[float, float]] = []
    failures: list[str] = []

    async def one_client():
        while next(budget, None) is not None and time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                await client.infer(model_name, [tensor])
            except Exception as error:  # counted: the swap scenario requires none
                failures.append(repr(error))
            else:
                latencies.append((sent, time.perf_counter() - sent))

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one_client() for _ in range(clients)))
    finally:
        await client.close()
    return time.perf_counter() - started, latencies, failures


def raw_onnxruntime(model: Path, sample, batch: int, images: int, cpus) -> float:
    """Images per second of onnxruntime alone on `batch`-row calls, on the server's cores."""
    before = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, cpus)
    try:
        options = ort.SessionOptions()
        if cpus:
            options.intra_op_num_threads = len(cpus)  # as the server sizes its sessions
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).standard_normal((batch, *sample)).astype(np.float32)
        session.run(None, {"input": x})  # warm-up
        calls = max(3, images // batch)
        started = time.perf_counter()
        for _ in range(calls):
            session.run(None, {"input": x})
        return calls * batch / (time.perf_counter() - started)
    finally:
        os.sched_setaffinity(0, before)


def measure(server, model, name, sample, protocol, args, requests, server_cpus) -> dict:
    asyncio.run(closed_loop(protocol, server, name, sample, args.clients, args.clients * 4, 60))
    rows_before, calls_before = batch_stats(server.http)
    wall, latencies, failures = asyncio.run(
        closed_loop(protocol, server, name, sample, args.clients, requests, args.max_seconds)
    )
    rows_after, calls_after = batch_stats(server.http)
    mean_batch = (rows_after - rows_before) / max(1.0, calls_after - calls_before)
    served = len(latencies) / wall
    raw = raw_onnxruntime(model, sample, max(1, round(mean_batch)), len(latencies), server_cpus)
    p50, p99 = np.percentile([lat for _, lat in latencies], [50, 99]) * 1000
    return {"protocol": protocol, "requests": len(latencies), "failures": len(failures),
            "rps": served, "p50": p50, "p99": p99, "batch": mean_batch, "raw": raw}  # fmt: skip


def throughput(args, kind: str, folder: Path, server_cpus) -> None:
    model, sample = (export_digits if kind == "digits" else export_resnet18)(folder)
    requests = args.requests or (4096 if kind == "digits" else 256)
    server = Server(model, server_cpus, "--max-batch-size", str(args.max_batch_size),
                    "--max-queue-delay-ms", str(args.max_queue_delay_ms))  # fmt: skip
    results = []
    try:
        for _ in range(args.rounds):
            for protocol in ("rest", "grpc"):
                results.append(
                    measure(
                        server, model, model.stem, sample, protocol, args, requests, server_cpus
                    )
                )
    finally:
        server.stop()
    print(f"\n{kind}: {args.clients} clients, {args.rounds} round(s) of {requests} requests each")
    print("protocol  req/s     p50 ms   p99 ms   rows/call  raw img/s  ratio  failures")
    for r in results:
        print(f"{r['protocol']:<8}  {r['rps']:<8.1f}  {r['p50']:<7.1f}  {r['p99']:<7.1f}  "
              f"{r['batch']:<9.1f}  {r['raw']:<9.1f}  {r['rps'] / r['raw']:<5.2f}  {r['failures']}")  # fmt: skip
    median = {
        p: np.median([r["rps"] for r in results if r["protocol"] == p]) for p in ("rest", "grpc")
    }
    print(f"median req/s: REST {median['rest']:.1f}, gRPC {median['grpc']:.1f} "
          f"-> gRPC/REST {median['grpc'] / median['rest']:.2f}")  # fmt: skip


def swap(args, folder: Path, server_cpus) -> None:
    model, sample = export_digits(folder)
    repo = folder / "repo"
    (repo / "digits" / "1").mkdir(parents=True)
    shutil.copy(model, repo / "digits" / "1" / "model.onnx")
    server = Server(repo, server_cpus, "--max-queue-delay-ms", str(args.max_queue_delay_ms))
    swap_window: dict[str, float] = {}

    async def swap_midway():
        await asyncio.sleep(args.swap_after)
        (repo / "digits" / "2").mkdir()
        shutil.copy(model, repo / "digits" / "2" / "model.onnx")
        async with httpx.AsyncClient(timeout=120) as client:
            swap_window["start"] = time.perf_counter()
            response = await client.post(f"http://{server.http}/v2/repository/models/digits/load")
            swap_window["end"] = time.perf_counter()
            swap_window["status"] = response.status_code

    async def run():
        load = closed_loop(
            "grpc", server, "digits", sample, args.clients, 10**9, args.swap_after * 2 + 2
        )
        results, _ = await asyncio.gather(load, swap_midway())
        return results

    try:
        asyncio.run(
            closed_loop("grpc", server, "digits", sample, args.clients, args.clients * 4, 60)
        )
        wall, latencies, failures = asyncio.run(run())
        versions = httpx.post(f"http://{server.http}/v2/repository/index").json()
    finally:
        server.stop()
    start, end = swap_window["start"], swap_window["end"] + 1.0
    # "Before": the two seconds just before the load request (the run's first seconds are
    # left out: connections and sessions warming up).
    before = [lat for sent, lat in latencies if start - 2.0 <= sent < start]
    during = [lat for sent, lat in latencies if start <= sent <= end]
    p99_before, p99_during = (np.percentile(x, 99) * 1000 for x in (before, during))
    print(f"\nswap: {args.clients} gRPC clients, {len(latencies)} requests in {wall:.1f} s, "
          f"load took {(swap_window['end'] - start) * 1000:.0f} ms (HTTP {swap_window['status']})")  # fmt: skip
    print(
        f"failed requests: {len(failures)}; serving after: {[(v['name'], v['version']) for v in versions]}"
    )
    print(f"p99 before: {p99_before:.1f} ms ({len(before)} requests); during the swap and the "
          f"second after: {p99_during:.1f} ms ({len(during)} requests) -> {p99_during / p99_before:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["digits", "resnet18", "swap", "all"], default="all")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="REST/gRPC rounds, alternating")
    parser.add_argument("--requests", type=int, default=None, help="answers per round")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    parser.add_argument("--swap-after", type=float, default=5.0, help="seconds of load first")
    parser.add_argument("--server-cpus", type=str, default="", help="e.g. 0 or 0,1")
    parser.add_argument("--client-cpus", type=str, default="", help="e.g. 1")
    args = parser.parse_args()
    server_cpus = {int(c) for c in args.server_cpus.split(",") if c}
    client_cpus = {int(c) for c in args.client_cpus.split(",") if c}
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server CPUs "
          f"{sorted(server_cpus) or 'all'}, client CPUs {sorted(client_cpus) or 'all'}; "
          f"onnxruntime {ort.__version__}")  # fmt: skip
    scenarios = ["digits", "resnet18", "swap"] if args.scenario == "all" else [args.scenario]
    with tempfile.TemporaryDirectory() as folder:
        for scenario in scenarios:
            sub = Path(folder) / scenario
            sub.mkdir()
            if scenario == "swap":
                swap(args, sub, server_cpus)
            else:
                throughput(args, scenario, sub, server_cpus)


if __name__ == "__main__":
    main()
