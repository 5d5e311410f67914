"""The KServe v2 gRPC server end to end: tritonclient.grpc (sync, asyncio and streaming) and
raw gRPC calls against a real port, compared with onnxruntime and with the REST answers."""

from __future__ import annotations

import asyncio
import contextlib
import queue

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_aio
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from nnspec.runtime.serve.settings import ServeSettings
from tests.serve.fixtures import (
    DIGIT_LABELS,
    make_conv_model,
    make_elementwise_model,
    make_two_input_model,
    onnxruntime_reference,
    serving,
)

MAX_BODY = 16 * 2**20


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpc_models")
    make_conv_model(folder / "tiny.onnx")
    make_two_input_model(folder / "pair.onnx")
    make_elementwise_model(folder / "echo.onnx")
    return folder


@pytest.fixture(scope="module")
def server(model_dir):
    settings = ServeSettings(max_batch_size=8, max_queue_delay_ms=5, max_body_bytes=MAX_BODY)
    with serving(model_dir, settings) as endpoints:
        yield endpoints


@pytest.fixture
def client(server):
    with contextlib.closing(triton_grpc.InferenceServerClient(server.grpc)) as c:
        yield c


def images(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 1, 12, 12)).astype(np.float32)


def _input(name, array, datatype="FP32"):
    tensor = triton_grpc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def test_health_metadata_config_and_index(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny", "1")
    assert not client.is_model_ready("tiny", "2")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "nnspec" and "model_repository" in meta["extensions"]
    model = client.get_model_metadata("tiny", as_json=True)
    assert model["versions"] == ["1"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": ["-1", "1", "12", "12"]}
    ]
    config = client.get_model_config("tiny").config  # tritonclient's own ModelConfig parses it
    assert config.max_batch_size == 8 and list(config.input[0].dims) == [1, 12, 12]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000
    index = client.get_model_repository_index(as_json=True)["models"]
    assert [(m["name"], m["state"]) for m in index] == [
        ("echo", "READY"),
        ("pair", "READY"),
        ("tiny", "READY"),
    ]


def test_infer_matches_onnxruntime_and_the_rest_answer(client, server, model_dir):
    x = images(3, seed=1)
    result = client.infer(
        "tiny", [_input("input", x)], request_id="g-1",
        outputs=[triton_grpc.InferRequestedOutput("logits")],
    )  # fmt: skip
    (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("g-1", "tiny", "1")
    with contextlib.closing(triton_http.InferenceServerClient(server.http)) as rest:
        tensor = triton_http.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        over_rest = rest.infer("tiny", [tensor]).as_numpy("logits")
    np.testing.assert_array_equal(result.as_numpy("logits"), over_rest)


def test_integer_and_bool_tensors_in_raw_contents(client):
    a = np.array([[1.5, -2.0, 0.0], [3.0, 4.0, -1.0]], dtype=np.float32)
    b = np.array([[2, 3, 4], [-1, 0, 5]], dtype=np.int64)
    result = client.infer("pair", [_input("a", a), _input("b", b, "INT64")])
    np.testing.assert_array_equal(result.as_numpy("y"), a * b.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("positive"), a > 0)
    assert result.as_numpy("positive").dtype == np.bool_


def test_classification_strings_equal_rest(client, server, model_dir):
    x = images(2, seed=2)
    wanted = triton_grpc.InferRequestedOutput("logits", class_count=3)
    got = client.infer("tiny", [_input("input", x)], outputs=[wanted]).as_numpy("logits")
    (logits,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
    assert got.shape == (2, 3)
    for row, entries in zip(logits, got, strict=True):
        top = np.argsort(-row)[:3]
        assert [e.decode() for e in entries] == [f"{row[i]:f}:{i}:{DIGIT_LABELS[i]}" for i in top]


def _raw_stub(server):
    channel = grpc.insecure_channel(server.grpc)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_typed_contents_instead_of_raw_bytes(server):
    """A client may send each input in the typed list of its datatype (KServe's SDK can)."""
    a = np.array([[1.0, -2.0, 3.5]], dtype=np.float32)
    request = service_pb2.ModelInferRequest(model_name="pair")
    first = request.inputs.add(name="a", datatype="FP32", shape=[1, 3])
    first.contents.fp32_contents.extend(a.ravel().tolist())
    second = request.inputs.add(name="b", datatype="INT64", shape=[1, 3])
    second.contents.int64_contents.extend([4, 5, -6])
    channel, stub = _raw_stub(server)
    with channel:
        response = stub.ModelInfer(request)
    y = np.frombuffer(response.raw_output_contents[0], np.float32)
    np.testing.assert_array_equal(y, [4.0, -10.0, -21.0])
    assert [o.name for o in response.outputs] == ["y", "positive"]


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (lambda r: setattr(r, "model_name", "nope"), grpc.StatusCode.NOT_FOUND, "unknown model 'nope'"),
        (lambda r: setattr(r, "model_version", "9"), grpc.StatusCode.NOT_FOUND, "no version '9'"),
        (lambda r: setattr(r.inputs[0], "datatype", "FP64"), grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
        (lambda r: r.inputs[0].shape.__setitem__(1, 4), grpc.StatusCode.INVALID_ARGUMENT, "does not fit"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\x00" * 8), grpc.StatusCode.INVALID_ARGUMENT, "needs 12 bytes"),
        (lambda r: r.raw_input_contents.pop(), grpc.StatusCode.INVALID_ARGUMENT, "1 entries for 2 inputs"),
        (lambda r: r.inputs[0].shape.__setitem__(0, 2**40), grpc.StatusCode.INVALID_ARGUMENT, "needs 13194139533312 bytes"),
        (lambda r: r.inputs[0].shape.__setitem__(0, -1), grpc.StatusCode.INVALID_ARGUMENT, "non-negative"),
        (lambda r: setattr(r.inputs[1], "datatype", "FP16"), grpc.StatusCode.INVALID_ARGUMENT, "does not match"),
        (lambda r: r.outputs.add(name="zz"), grpc.StatusCode.INVALID_ARGUMENT, "no output 'zz'"),
    ],
)  # fmt: skip
def test_refusals_are_status_codes_with_the_rest_message(server, mutate, code, words):
    request = service_pb2.ModelInferRequest(model_name="pair")
    request.inputs.add(name="a", datatype="FP32", shape=[1, 3])
    request.inputs.add(name="b", datatype="INT64", shape=[1, 3])
    request.raw_input_contents.extend(
        [np.ones(3, np.float32).tobytes(), np.ones(3, np.int64).tobytes()]
    )
    mutate(request)
    channel, stub = _raw_stub(server)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == code and words in info.value.details()


def test_tritonclient_sees_code_and_message(client):
    with pytest.raises(InferenceServerException, match="does not match the model's FP32") as info:
        client.infer("tiny", [_input("input", np.zeros((1, 1, 12, 12)), "FP64")])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_tensors_past_grpcs_4_mib_default_both_ways(client):
    x = np.arange(1_300_000, dtype=np.float32).reshape(1, -1)  # 5.2 MB in, 5.2 MB out
    np.testing.assert_array_equal(client.infer("echo", [_input("x", x)]).as_numpy("y"), x)
    too_big = np.zeros((1, MAX_BODY // 4 + 1024), np.float32)
    with pytest.raises(InferenceServerException) as info:
        client.infer("echo", [_input("x", too_big)])
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"


def test_asyncio_client_concurrent_mixed_batches(server, model_dir):
    sizes = [1, 3, 2, 5, 1, 4, 2, 12, 1, 3]  # 12 > max_batch_size 8: runs alone

    async def run():
        async with triton_aio.InferenceServerClient(server.grpc) as c:
            batches = [images(n, seed=30 + i) for i, n in enumerate(sizes)]
            results = await asyncio.gather(
                *(c.infer("tiny", [_input("input", x)]) for x in batches)
            )
            return batches, results

    batches, results = asyncio.run(run())
    for x, result in zip(batches, results, strict=True):
        (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
        np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_stream_infer_answers_every_request(client, model_dir):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    batches = {f"s{i}": images(i + 1, seed=50 + i) for i in range(4)}
    for request_id, x in batches.items():
        client.async_stream_infer("tiny", [_input("input", x)], request_id=request_id)
    client.async_stream_infer("nope", [_input("input", images(1))], request_id="bad")
    got = [answers.get(timeout=60) for _ in range(5)]
    client.stop_stream()
    errors = [error for result, error in got if error is not None]
    assert len(errors) == 1 and "unknown model 'nope'" in str(errors[0])
    for result, error in got:
        if error is None:
            x = batches[result.get_response().id]
            (expected,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x})
            np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5, atol=1e-6)


def test_rest_and_grpc_requests_share_one_batch(model_dir):
    """Both protocols feed the same batcher: with room for exactly their rows, one call."""
    settings = ServeSettings(max_batch_size=6, max_queue_delay_ms=30_000)
    with serving(model_dir / "tiny.onnx", settings) as endpoints:
        x_rest, x_grpc = images(2, seed=60), images(4, seed=61)

        async def run():
            async with triton_aio.InferenceServerClient(endpoints.grpc) as g:
                async with httpx.AsyncClient() as h:
                    rest = h.post(
                        f"http://{endpoints.http}/v2/models/tiny/infer",
                        json={"inputs": [{"name": "input", "shape": [2, 1, 12, 12],
                                          "datatype": "FP32", "data": x_rest.ravel().tolist()}]},
                        timeout=60,
                    )  # fmt: skip
                    return await asyncio.gather(rest, g.infer("tiny", [_input("input", x_grpc)]))

        rest, over_grpc = asyncio.run(run())
        text = httpx.get(f"http://{endpoints.http}/metrics").text
    (expected_rest,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x_rest})
    (expected_grpc,) = onnxruntime_reference(model_dir / "tiny.onnx", {"input": x_grpc})
    got_rest = np.array(rest.json()["outputs"][0]["data"], np.float32).reshape(2, 10)
    np.testing.assert_allclose(got_rest, expected_rest, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(over_grpc.as_numpy("logits"), expected_grpc, rtol=1e-5, atol=1e-6)
    assert 'nnspec_batch_size_count{model="tiny"} 1.0' in text
    assert 'nnspec_inference_requests_total{model="tiny",protocol="grpc",status="200"} 1.0' in text
    assert 'nnspec_inference_requests_total{model="tiny",protocol="http",status="200"} 1.0' in text


def test_full_queue_is_unavailable(model_dir):
    with serving(model_dir / "tiny.onnx", ServeSettings(max_queue=0)) as endpoints:
        with contextlib.closing(triton_grpc.InferenceServerClient(endpoints.grpc)) as c:
            with pytest.raises(InferenceServerException, match="retry shortly") as info:
                c.infer("tiny", [_input("input", images(1))])
    assert info.value.status() == "StatusCode.UNAVAILABLE"


def test_a_cancelled_call_is_counted_as_a_disconnect_not_an_error(model_dir):
    settings = ServeSettings(max_batch_size=64, max_queue_delay_ms=60_000)  # holds the request
    with serving(model_dir / "tiny.onnx", settings) as endpoints:
        with contextlib.closing(triton_grpc.InferenceServerClient(endpoints.grpc)) as c:
            with pytest.raises(InferenceServerException) as info:
                c.infer("tiny", [_input("input", images(1))], client_timeout=0.5)
        assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        metrics = f"http://{endpoints.http}/metrics"
        gone = 'nnspec_client_disconnects_total{model="tiny",protocol="grpc"} 1.0'
        for _ in range(500):
            if gone in httpx.get(metrics).text:
                break
        text = httpx.get(metrics).text
    assert gone in text
    assert 'protocol="grpc",status=' not in text
