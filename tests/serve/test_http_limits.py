"""Hostile and broken HTTP clients: disconnects mid-body, slowloris headers and bodies, too many
connections; and non-finite outputs written as valid JSON that clients still read as floats."""

from __future__ import annotations

import contextlib
import json
import math
import socket

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

from nnspec.runtime.serve.settings import ServeSettings
from tests.serve.fixtures import make_conv_model, make_elementwise_model, serving


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("limits")
    make_conv_model(folder / "tiny.onnx")
    make_elementwise_model(folder / "log.onnx", "Log", 4)
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    settings = ServeSettings(header_timeout=0.5, body_timeout=0.5)
    with serving(model_dir, settings) as endpoints:
        yield endpoints


def _connect(url: str) -> socket.socket:
    host, port = url.split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (30 s at most)."""
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks)


def _metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"http://{url}/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


HEAD = (
    "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: test\r\n"
    "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
)


def test_a_client_leaving_mid_body_is_no_error_and_no_traceback(server, capfd):
    before = _metric(server.http, 'nnspec_client_disconnects_total{model="tiny",protocol="http"}')
    with _connect(server.http) as sock:
        sock.sendall(HEAD.encode() + b'{"inputs": [')
    # The next request on a fresh connection is answered, after the server saw the hang-up.
    gone = 'nnspec_client_disconnects_total{model="tiny",protocol="http"}'
    for _ in range(500):
        if _metric(server.http, gone) > before:
            break
    assert _metric(server.http, gone) == before + 1
    text = httpx.get(f"http://{server.http}/metrics").text
    assert 'status="500"' not in text
    assert "Traceback" not in capfd.readouterr().err


def test_slow_headers_get_408_and_the_connection_closed(server):
    before = _metric(server.http, 'nnspec_request_timeouts_total{phase="headers"}')
    with _connect(server.http) as sock:
        sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: te")  # and then nothing
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    with _connect(server.http) as sock:  # a connection that never says anything
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")
    assert _metric(server.http, 'nnspec_request_timeouts_total{phase="headers"}') == before + 2


def test_a_slow_body_gets_408_and_the_connection_closed(server):
    before = _metric(server.http, 'nnspec_request_timeouts_total{phase="body"}')
    with _connect(server.http) as sock:
        sock.sendall(HEAD.encode() + b'{"inputs"')
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert _metric(server.http, 'nnspec_request_timeouts_total{phase="body"}') == before + 1
    assert 'status="500"' not in httpx.get(f"http://{server.http}/metrics").text


def test_connections_past_the_limit_get_503(model_dir):
    settings = ServeSettings(max_connections=2, header_timeout=60)
    with serving(model_dir / "tiny.onnx", settings) as endpoints:
        with _connect(endpoints.http), _connect(endpoints.http):  # two idle connections
            refused = httpx.get(f"http://{endpoints.http}/v2/health/live")
        accepted = httpx.get(f"http://{endpoints.http}/v2/health/live")
    assert refused.status_code == 503
    assert accepted.status_code == 200


def _strict_json(text: str):
    """JSON as RFC 8259 and JavaScript's JSON.parse read it: no NaN or Infinity tokens."""

    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_outputs_are_valid_json_that_clients_read_as_floats(server):
    x = np.array([[0.0, -1.0, 1.0, math.e]], dtype=np.float32)  # log: -inf, nan, 0, 1
    body = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x.ravel().tolist()}]
    }
    response = httpx.post(f"http://{server.http}/v2/models/log/infer", json=body)
    data = _strict_json(response.text)["outputs"][0]["data"]
    assert data[:2] == ["-Infinity", "NaN"]
    assert data[2:] == pytest.approx([0.0, 1.0])
    with contextlib.closing(triton_http.InferenceServerClient(server.http)) as client:
        tensor = triton_http.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        wanted = triton_http.InferRequestedOutput("y", binary_data=False)
        got = client.infer("log", [tensor], outputs=[wanted]).as_numpy("y")
    assert got.dtype == np.float32
    assert got[0, 0] == -np.inf and np.isnan(got[0, 1])
    np.testing.assert_allclose(got[0, 2:], [0.0, 1.0], atol=1e-6)


def test_non_finite_inputs_are_taken_in_the_same_spelling(server):
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                        "data": ["Infinity", "NaN", 1.0, "-Infinity"]}]}  # fmt: skip
    response = httpx.post(f"http://{server.http}/v2/models/log/infer", json=body)
    assert _strict_json(response.text)["outputs"][0]["data"] == ["Infinity", "NaN", 0.0, "NaN"]
