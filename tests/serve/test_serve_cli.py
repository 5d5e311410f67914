"""`nnspec serve` as a user runs it: a real process, SIGTERM with requests in flight, errors."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from nnspec.runtime.cli import main
from tests.serve.fixtures import make_conv_model, onnxruntime_reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_conv_model(tmp_path_factory.mktemp("cli") / "tiny.onnx")


def _start(model, *options):
    command = [sys.executable, "-m", "nnspec.runtime.cli", "serve", str(model), "--port", "0",
               "--grpc-port", "0"]  # fmt: skip
    process = subprocess.Popen(
        [*command, *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    first = process.stdout.readline()  # "serving 1 model(s) on http://127.0.0.1:PORT ..."
    found = re.search(r"http://(127\.0\.0\.1:\d+)", first)
    if not found:
        process.kill()
        raise AssertionError(f"server did not start: {first!r}")
    url = found.group(1)
    for _ in range(500):  # bounded wait for the lifespan startup
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{url}/v2/health/ready").status_code == 200:
                return process, url
    process.kill()
    raise AssertionError("server never became ready")


def test_sigterm_finishes_in_flight_requests_and_exits_0(tiny):
    # A ten-minute queue delay holds the requests in the batcher until SIGTERM, which makes
    # the server stop waiting for batch-mates and answer them.
    process, url = _start(tiny, "--max-batch-size", "64", "--max-queue-delay-ms", "600000")
    try:
        batches = [
            np.random.default_rng(i).standard_normal((i + 1, 1, 12, 12)).astype(np.float32)
            for i in range(6)
        ]
        with contextlib.closing(triton.InferenceServerClient(url, concurrency=6)) as client:
            pending = []
            for x in batches:
                tensor = triton.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                pending.append(client.async_infer("tiny", [tensor]))
            for _ in range(1000):
                if (
                    'nnspec_queue_depth{model="tiny",version="1"} 6.0'
                    in httpx.get(f"http://{url}/metrics").text
                ):
                    break
            else:
                raise AssertionError("the six requests never showed up in the queue")
            process.send_signal(signal.SIGTERM)
            for x, request in zip(batches, pending, strict=True):
                (expected,) = onnxruntime_reference(tiny, {"input": x})
                got = request.get_result(timeout=120).as_numpy("logits")
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()


def test_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_port_in_use_is_a_clear_error(tiny, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(tiny), "--port", str(port), "--grpc-port", "0"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_grpc_port_in_use_is_a_clear_error(tiny, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(tiny), "--port", "0", "--grpc-port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--grpc-port" in err


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--workers", "0"], "--workers must be positive"),
        (["--instances", "0"], "--instances must be positive"),
        (["--poll-seconds", "0"], "--poll-seconds must be positive"),
        (["--header-timeout", "-1"], "--header-timeout must be positive"),
        (["--max-connections", "0"], "--max-connections must be positive"),
        (["--version-policy", "newest"], "--version-policy: version policy 'newest' is not one of"),
        (["--port", "9000", "--grpc-port", "9000"], "give them different ports"),
        (["--grpc-port", "70000"], "--grpc-port must be between 0 and 65535"),
    ],
)
def test_bad_option_values_are_usage_errors(tiny, capsys, options, words):
    assert main(["serve", str(tiny), *options]) == 2
    assert words in capsys.readouterr().err
