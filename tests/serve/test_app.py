"""The server end to end: tritonclient (JSON and binary) and plain HTTP against a real port."""

from __future__ import annotations

import contextlib
import gzip
import json

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from nnspec.runtime.serve.settings import ServeSettings
from tests.serve.fixtures import (
    DIGIT_LABELS,
    make_any_size_model,
    make_conv_model,
    make_two_input_model,
    onnxruntime_reference,
    running_server,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    make_conv_model(folder / "tiny.onnx")
    make_two_input_model(folder / "pair.onnx")
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    settings = ServeSettings(max_batch_size=8, max_queue_delay_ms=5, max_body_bytes=200_000)
    with running_server(model_dir, settings) as url:
        yield url


@pytest.fixture
def client(server):
    with contextlib.closing(triton.InferenceServerClient(server, concurrency=4)) as c:
        yield c


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 1, 12, 12)).astype(np.float32)


def test_health_metadata_and_index_as_tritonclient_reads_them(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("pair")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 12, 12]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    pair = client.get_model_metadata("pair")
    assert [(t["name"], t["datatype"]) for t in pair["inputs"]] == [("a", "FP32"), ("b", "INT64")]
    assert [(t["name"], t["datatype"]) for t in pair["outputs"]] == [
        ("y", "FP32"),
        ("positive", "BOOL"),
    ]
    index = client.get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [("pair", "READY"), ("tiny", "READY")]
    config = client.get_model_config("tiny")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [1, 12, 12]
    assert json.loads(config["parameters"]["nnspec.labels"]["string_value"]) == DIGIT_LABELS


@pytest.mark.parametrize("binary_in", [True, False])
@pytest.mark.parametrize("binary_out", [True, False])
def test_infer_matches_onnxruntime(client, model_dir, binary_in, binary_out):
    x = images(3, seed=1)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    wanted = triton.InferRequestedOutput("logits", binary_data=binary_out)
    result = client.infer("tiny", [tensor], outputs=[wanted], request_id="r-7")
    (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
    assert result.get_response()["id"] == "r-7"
    assert result.get_response()["model_name"] == "tiny"


def test_two_inputs_integer_and_bool_datatypes(client, model_dir):
    a = np.array([[1.5, -2.0, 0.0], [3.0, 4.0, -1.0]], dtype=np.float32)
    b = np.array([[2, 3, 4], [-1, 0, 5]], dtype=np.int64)
    ins = [triton.InferInput("a", [2, 3], "FP32"), triton.InferInput("b", [2, 3], "INT64")]
    ins[0].set_data_from_numpy(a, binary_data=False)
    ins[1].set_data_from_numpy(b, binary_data=True)
    result = client.infer("pair", ins)  # no outputs named: all of them, in binary
    np.testing.assert_array_equal(result.as_numpy("y"), a * b.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("positive"), a > 0)
    assert result.as_numpy("positive").dtype == np.bool_


@pytest.mark.parametrize("binary_out", [True, False])
def test_classification_returns_top_k_with_labels(client, model_dir, binary_out):
    x = images(2, seed=2)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    wanted = triton.InferRequestedOutput("logits", binary_data=binary_out, class_count=3)
    got = client.infer("tiny", [tensor], outputs=[wanted]).as_numpy("logits")
    (logits,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
    assert got.shape == (2, 3)
    for row, entries in zip(logits, got, strict=True):
        top = np.argsort(-row)[:3]
        texts = [e.decode() if isinstance(e, bytes) else e for e in entries]
        assert texts == [f"{row[i]:f}:{i}:{DIGIT_LABELS[i]}" for i in top]


def test_gzip_request_body(client, model_dir):
    x = images(2, seed=3)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = client.infer("tiny", [tensor], request_compression_algorithm="gzip")
    (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_concurrent_mixed_batches_equal_direct_onnxruntime(client, model_dir):
    """Requests merged by the batcher still each get exactly their own rows back."""
    sizes = [1, 3, 2, 5, 1, 4, 2, 12, 1, 3, 6, 2]  # 12 > max_batch_size 8: runs alone
    batches = [images(n, seed=10 + i) for i, n in enumerate(sizes)]
    pending = []
    for x in batches:
        tensor = triton.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=len(x) % 2 == 0)
        pending.append(client.async_infer("tiny", [tensor]))
    for x, request in zip(batches, pending, strict=True):
        (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
        got = request.get_result().as_numpy("logits")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_concurrent_requests_share_one_model_call(model_dir):
    """With room for exactly all rows, the batcher runs one onnxruntime call for them all."""
    sizes = [1, 2, 3, 2]
    settings = ServeSettings(max_batch_size=sum(sizes), max_queue_delay_ms=30_000)
    with running_server(model_dir / "tiny.onnx", settings) as url:
        with contextlib.closing(triton.InferenceServerClient(url, concurrency=4)) as c:
            batches = [images(n, seed=20 + n) for n in sizes]
            pending = []
            for x in batches:
                tensor = triton.InferInput("input", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                pending.append(c.async_infer("tiny", [tensor]))
            for x, request in zip(batches, pending, strict=True):
                (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
                got = request.get_result().as_numpy("logits")
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        text = httpx.get(f"http://{url}/metrics").text
    assert 'nnspec_batch_size_count{model="tiny"} 1.0' in text
    assert 'nnspec_batch_size_sum{model="tiny"} 8.0' in text


def test_free_image_size_requests_batch_by_shape_and_bad_sizes_are_400(tmp_path):
    model = make_any_size_model(tmp_path / "anysize.onnx")
    rng = np.random.default_rng(5)
    shapes = [(2, 1, 9, 9), (1, 1, 16, 12), (3, 1, 9, 9), (1, 1, 3, 3)]  # 3x3 < the 5x5 kernel
    batches = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    settings = ServeSettings(max_batch_size=16, max_queue_delay_ms=20)
    with running_server(model, settings) as url:
        with contextlib.closing(triton.InferenceServerClient(url, concurrency=4)) as c:
            assert c.get_model_metadata("anysize")["inputs"][0]["shape"] == [-1, 1, -1, -1]
            pending = []
            for x in batches:
                tensor = triton.InferInput("image", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                pending.append(c.async_infer("anysize", [tensor]))
            for x, request in zip(batches[:3], pending[:3], strict=True):
                (expected,) = onnxruntime_reference(model, {"image": x})
                got = request.get_result().as_numpy("scores")
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
            with pytest.raises(InferenceServerException, match="rejected the input") as info:
                pending[3].get_result()
            assert info.value.status() == "400"


def _post(server, path, body=b"", headers=None):
    return httpx.post(f"http://{server}{path}", content=body, headers=headers or {})


def _json_request(shape, data, datatype="FP32", name="input"):
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


GOOD = np.zeros((1, 1, 12, 12)).ravel().tolist()


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v2/models/tiny/infer", b"{not json", 400, "not valid JSON"),
        ("/v2/models/tiny/infer", b"[1, 2]", 400, "JSON object"),
        ("/v2/models/tiny/infer", b'{"inputs": []}', 400, "non-empty 'inputs'"),
        ("/v2/models/nope/infer", _json_request([1, 1, 12, 12], GOOD), 404, "unknown model 'nope'"),
        (
            "/v2/models/tiny/versions/9/infer",
            _json_request([1, 1, 12, 12], GOOD),
            404,
            "no version",
        ),
        (
            "/v2/models/tiny/infer",
            _json_request([1, 1, 12, 12], GOOD, name="x"),
            400,
            "no input 'x'",
        ),
        ("/v2/models/tiny/infer", _json_request([1, 1, 12, 13], GOOD), 400, "does not fit"),
        ("/v2/models/tiny/infer", _json_request([1, 12, 12], GOOD), 400, "does not fit"),
        ("/v2/models/tiny/infer", _json_request([2, 1, 12, 12], GOOD), 400, "needs 288 elements"),
        ("/v2/models/tiny/infer", _json_request([1, 1, 12, 12], GOOD, "FP64"), 400, "datatype"),
        ("/v2/models/tiny/infer", _json_request([1, 1, 12, 12], ["a"] * 144), 400, "FP32 values"),
        ("/v2/models/tiny/infer", _json_request([0, 1, 12, 12], []), 400, "empty"),
        (
            "/v2/models/pair/infer",
            _json_request([1, 3], [1, 2, 3], name="a"),
            400,
            "needs input(s) b",
        ),
    ],
)
def test_bad_requests_get_4xx_json_errors(server, path, body, status, words):
    response = _post(server, path, body)
    assert response.status_code == status
    assert words in response.json()["error"]


def test_nested_json_data_and_request_wide_binary_output(server, model_dir):
    x = images(2, seed=4)
    body = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2, 1, 12, 12], "datatype": "FP32", "data": x.tolist()}
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    response = _post(server, "/v2/models/tiny/infer", body)
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    (output,) = header["outputs"]
    assert output["shape"] == [2, 10] and output["parameters"]["binary_data_size"] == 80
    got = np.frombuffer(response.content[length:], np.float32).reshape(2, 10)
    (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bad_binary_framing(server, model_dir):
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 1, 12, 12],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 576},
                }
            ]
        }
    ).encode()
    raw = np.zeros(144, np.float32).tobytes()
    short = _post(
        server,
        "/v2/models/tiny/infer",
        header + raw[:-4],
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400 and "runs past the end" in short.json()["error"]
    extra = _post(
        server,
        "/v2/models/tiny/infer",
        header + raw + b"xx",
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert extra.status_code == 400 and "no input claims" in extra.json()["error"]
    wrong = _post(
        server, "/v2/models/tiny/infer", header + raw, {"Inference-Header-Content-Length": "abc"}
    )
    assert wrong.status_code == 400 and "byte count" in wrong.json()["error"]
    ok = _post(
        server,
        "/v2/models/tiny/infer",
        header + raw,
        {"Inference-Header-Content-Length": str(len(header))},
    )
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
    (expected,) = onnxruntime_reference(
        model_dir / "tiny.onnx", {"input": np.zeros((1, 1, 12, 12), np.float32)}
    )
    np.testing.assert_allclose(
        ok.json()["outputs"][0]["data"], expected.ravel(), rtol=1e-5, atol=1e-6
    )


def test_body_too_large_is_413(server):
    big = _json_request([1, 1, 12, 12], [0.0] * 50_000)
    assert len(big) > 200_000
    response = _post(server, "/v2/models/tiny/infer", big)
    assert response.status_code == 413 and "limit" in response.json()["error"]
    bomb = gzip.compress(b" " * 300_000)  # small on the wire, too big once inflated
    response = _post(server, "/v2/models/tiny/infer", bomb, {"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_full_queue_is_503_with_retry_after(model_dir):
    # max_queue=0: the queue is always full, so the refusal is certain (the batcher's own
    # counting of waiting requests is tested in test_serve_batching.py).
    settings = ServeSettings(max_queue=0)
    with running_server(model_dir / "tiny.onnx", settings) as url:
        response = _post(url, "/v2/models/tiny/infer", _json_request([1, 1, 12, 12], GOOD))
        text = httpx.get(f"http://{url}/metrics").text
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "retry" in response.json()["error"]
    assert 'nnspec_inference_requests_total{model="tiny",protocol="http",status="503"} 1.0' in text


def test_tritonclient_sees_the_error_message(client):
    x = np.zeros((1, 1, 12, 12), np.float64)
    tensor = triton.InferInput("input", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException, match="does not match the model's FP32"):
        client.infer("tiny", [tensor])


def test_metrics_count_requests_by_status(server):
    _post(server, "/v2/models/tiny/infer", b"{oops")
    text = httpx.get(f"http://{server}/metrics").text
    assert 'nnspec_inference_requests_total{model="tiny",protocol="http",status="400"}' in text
    assert 'nnspec_inference_latency_seconds_count{model="tiny",protocol="http"}' in text
    assert 'nnspec_queue_depth{model="tiny",version="1"} 0.0' in text


@pytest.mark.parametrize(
    "path",
    ["/v2/nothing/here", "/v2/models/nope", "/v2/models/nope/ready", "/v2/models/tiny/versions/2"],
)
def test_unknown_paths_and_models_are_json_404(server, path):
    response = httpx.get(f"http://{server}{path}")
    assert response.status_code == 404 and response.json()["error"]


def test_wrong_method_is_json_405(server):
    response = httpx.get(f"http://{server}/v2/models/tiny/infer")
    assert response.status_code == 405 and response.json()["error"]
