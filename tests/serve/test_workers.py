"""`nnspec serve --workers 2`: two processes on the same REST and gRPC ports, metrics summed
over both, a killed worker replaced, SIGTERM ending everything cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from nnspec.runtime.cli import main
from tests.serve.fixtures import make_conv_model, onnxruntime_reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_conv_model(tmp_path_factory.mktemp("workers") / "tiny.onnx")


def worker_pids(parent: int) -> set[int]:
    """The worker processes of `parent` (multiprocessing's spawned children)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == parent and b"spawn_main" in cmdline:
                found.add(int(stat.parent.name))
    return found


def eventually(condition, what: str, seconds: float = 120.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"http://{url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_two_workers_share_the_ports_sum_metrics_and_are_replaced(tiny, capsys):
    command = [sys.executable, "-m", "nnspec.runtime.cli", "serve", str(tiny), "--port", "0",
               "--grpc-port", "0", "--workers", "2", "--max-queue-delay-ms", "0"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        banner = process.stdout.readline()  # printed once both workers are ready
        found = re.search(
            r"http://(127\.0\.0\.1:\d+) \(REST\) and (127\.0\.0\.1:\d+) \(gRPC\)", banner
        )
        assert found and "2 worker processes" in banner, banner
        http_url, grpc_url = found.groups()
        first = worker_pids(process.pid)
        assert len(first) == 2

        x = np.random.default_rng(0).standard_normal((2, 1, 12, 12)).astype(np.float32)
        (expected,) = onnxruntime_reference(tiny, {"input": x})
        body = {"inputs": [{"name": "input", "shape": [2, 1, 12, 12], "datatype": "FP32",
                            "data": x.ravel().tolist()}]}  # fmt: skip

        def ask_both() -> None:
            for _ in range(6):  # a new connection each time: the kernel spreads them
                answer = httpx.post(f"http://{http_url}/v2/models/tiny/infer", json=body).json()
                got = np.array(answer["outputs"][0]["data"], np.float32).reshape(2, 10)
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
                with contextlib.closing(triton_grpc.InferenceServerClient(grpc_url)) as c:
                    tensor = triton_grpc.InferInput("input", [2, 1, 12, 12], "FP32")
                    tensor.set_data_from_numpy(x)
                    got = c.infer("tiny", [tensor]).as_numpy("logits")
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

        ask_both()
        ok = 'nnspec_inference_requests_total{model="tiny",protocol="http",status="200"}'
        assert metric(http_url, ok) == 6
        # Each worker opened the model once: the sum over processes shows both.
        loads = 'nnspec_model_loads_total{model="tiny",result="ok"}'
        assert metric(http_url, loads) == 2

        # Another server cannot join the workers' ports, though they share them by SO_REUSEPORT.
        http_port, grpc_port = http_url.rsplit(":", 1)[1], grpc_url.rsplit(":", 1)[1]
        assert main(["serve", str(tiny), "--port", http_port, "--workers", "2"]) == 2
        assert main(["serve", str(tiny), "--port", "0", "--grpc-port", grpc_port]) == 2
        assert capsys.readouterr().err.count("cannot listen on 127.0.0.1") == 2

        refused = httpx.post(f"http://{http_url}/v2/repository/models/tiny/unload")
        assert refused.status_code == 409 and "--poll-seconds" in refused.json()["error"]

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(worker_pids(process.pid) - first) == 1, "a replacement worker")
        eventually(lambda: metric(http_url, loads) == 3, "the replacement opened its model")
        ask_both()
        assert metric(http_url, ok) == 12  # the killed worker's counts outlive it

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
        assert worker_pids(process.pid) == set()
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
