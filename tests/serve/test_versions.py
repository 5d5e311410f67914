"""Model versions: policies, config.pbtxt, Triton's repository extension (load/unload), polling,
and swaps under load that fail no request. Versions of the test model y = k * x differ in k,
so every answer says which version computed it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from nnspec.compiler.errors import ServeError
from nnspec.runtime.export.triton_repo import write_triton_repository
from nnspec.runtime.serve.repository import ModelRepository, VersionPolicy, read_triton_config
from nnspec.runtime.serve.settings import ServeSettings
from tests.serve.fixtures import make_scale_model, serving

X = np.array([[1.0, -2.0, 0.5, 4.0]], dtype=np.float32)


def eventually(condition, what: str, seconds: float = 60.0):
    """Wait until condition() is true (a bounded loop, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def rest_infer(url: str, version: str | None = None, x: np.ndarray = X) -> tuple[str, list]:
    path = f"/v2/models/scale/versions/{version}/infer" if version else "/v2/models/scale/infer"
    body = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip
    response = httpx.post(f"http://{url}{path}", json=body, timeout=120)
    if response.status_code != 200:
        raise AssertionError(f"{response.status_code}: {response.text}")
    answer = response.json()
    return answer["model_version"], answer["outputs"][0]["data"]


def index(url: str) -> list[tuple[str, str, str]]:
    rows = httpx.post(f"http://{url}/v2/repository/index").json()
    return [(r["name"], r["version"], r["state"]) for r in rows]


@pytest.mark.parametrize(
    ("text", "available", "chosen"),
    [
        ("latest", [1, 2, 10], [10]),  # numeric order, not text order
        ("latest:2", [3, 1, 2], [2, 3]),
        ("all", [2, 1], [1, 2]),
        ("specific:1,3", [1, 2, 3], [1, 3]),
        ("specific:4", [1, 2], []),
    ],
)
def test_version_policies_choose_by_hand(text, available, chosen):
    assert VersionPolicy.parse(text).select(available) == chosen


@pytest.mark.parametrize("text", ["latest:0", "newest", "specific:", "specific:a", "all:2"])
def test_bad_version_policies_are_refused(text):
    with pytest.raises(ServeError, match="not one of"):
        VersionPolicy.parse(text)


def test_config_pbtxt_is_read_as_tritons_text_format(tmp_path):
    model = make_scale_model(tmp_path / "scale.onnx", 1.0)
    model_dir = write_triton_repository(model, tmp_path / "repo", "scale", labels=["a", "b"])
    config = model_dir / "config.pbtxt"
    config.write_text(
        config.read_text()
        + "version_policy: { specific: { versions: [1, 3] } }\n"
        + "instance_group [ { count: 2, kind: KIND_CPU } ]\n"
        + 'optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "x" } ] } }\n'
    )
    settings = read_triton_config(model_dir)
    assert settings.max_batch_size == 64  # nnspec export's default
    assert settings.version_policy == VersionPolicy(latest=None, specific=(1, 3))
    assert settings.labels == ["a", "b"]
    assert settings.instances == 2


def test_a_broken_config_pbtxt_is_located(tmp_path):
    make_scale_model(tmp_path / "repo" / "scale" / "1" / "model.onnx", 1.0)
    (tmp_path / "repo" / "scale" / "config.pbtxt").write_text(
        'name: "scale"\nmax_batch_size: lots\n'
    )
    with pytest.raises(ServeError, match=r"config.pbtxt: not a valid Triton .*2:"):
        ModelRepository(tmp_path / "repo").read("scale")


def _repo(tmp_path, *versions: int):
    for version in versions:
        make_scale_model(tmp_path / "repo" / "scale" / str(version) / "model.onnx", version)
    return tmp_path / "repo"


def test_every_version_answers_and_the_default_is_the_highest(tmp_path):
    repo = _repo(tmp_path, 1, 2, 10)
    with serving(repo, ServeSettings(version_policy="all")) as endpoints:
        url = endpoints.http
        for version in ("1", "2", "10"):
            assert rest_infer(url, version) == (version, (X * int(version)).ravel().tolist())
        assert rest_infer(url)[0] == "10"
        assert httpx.get(f"http://{url}/v2/models/scale").json()["versions"] == ["1", "2", "10"]
        assert index(url) == [("scale", v, "READY") for v in ("1", "2", "10")]
        with contextlib.closing(triton_grpc.InferenceServerClient(endpoints.grpc)) as c:
            tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X)
            result = c.infer("scale", [tensor], model_version="2")
            assert result.get_response().model_version == "2"
            np.testing.assert_array_equal(result.as_numpy("y"), X * 2)


def test_load_and_unload_over_rest_and_grpc(tmp_path):
    repo = _repo(tmp_path, 1)
    with serving(repo) as endpoints:
        url = endpoints.http
        rest = triton_http.InferenceServerClient(url)
        rpc = triton_grpc.InferenceServerClient(endpoints.grpc)
        with contextlib.closing(rest), contextlib.closing(rpc):
            rest.unload_model("scale")
            assert not rest.is_model_ready("scale") and not rpc.is_model_ready("scale")
            rows = httpx.post(f"http://{url}/v2/repository/index").json()
            assert rows == [{"name": "scale", "version": "", "state": "UNAVAILABLE",
                             "reason": "unloaded"}]  # fmt: skip
            refused = httpx.post(f"http://{url}/v2/models/scale/infer", json={"inputs": []})
            assert refused.status_code == 503 and "not loaded: unloaded" in refused.json()["error"]
            tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
            tensor.set_data_from_numpy(X)
            with pytest.raises(InferenceServerException) as info:
                rpc.infer("scale", [tensor])
            assert info.value.status() == "StatusCode.UNAVAILABLE"

            make_scale_model(repo / "scale" / "2" / "model.onnx", 2.0)
            rpc.load_model("scale")  # loads the repository as it is now: version 2
            assert rest_infer(url) == ("2", (X * 2).ravel().tolist())
            assert index(url) == [("scale", "2", "READY")]

            with pytest.raises(InferenceServerException, match="no model 'ghost'") as info:
                rest.load_model("ghost")
            assert info.value.status() == "404"
            with pytest.raises(InferenceServerException, match="not supported") as info:
                rest.load_model("scale", config='{"max_batch_size": 2}')
            assert info.value.status() == "400"

            (repo / "scale" / "3").mkdir()
            (repo / "scale" / "3" / "model.onnx").write_bytes(b"not a model")
            with pytest.raises(InferenceServerException, match="cannot load") as info:
                rpc.load_model("scale")
            assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert rest_infer(url) == ("2", (X * 2).ravel().tolist())  # still serving

            (repo / "scale" / "3" / "model.onnx").unlink()
            make_scale_model(repo / "other" / "1" / "model.onnx", 7.0)
            assert ("other", "", "UNAVAILABLE") in index(url)  # in the repository, not loaded
            rest.load_model("other")
            assert rest.is_model_ready("other")


class Clients:
    """Closed-loop clients alternating REST and gRPC; every answer and failure recorded."""

    def __init__(self, endpoints, count: int = 4):
        self.endpoints = endpoints
        self.answers: list[tuple[str, bool]] = []  # (version, answer correct for it)
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(i,)) for i in range(count)]

    def _loop(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with contextlib.closing(triton_grpc.InferenceServerClient(self.endpoints.grpc)) as rpc:
            while not self._stop.is_set():
                x = rng.standard_normal((int(rng.integers(1, 4)), 4)).astype(np.float32)
                try:
                    if len(self.answers) % 2:
                        tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
                        tensor.set_data_from_numpy(x)
                        result = rpc.infer("scale", [tensor])
                        version, y = result.get_response().model_version, result.as_numpy("y")
                    else:
                        version, data = rest_infer(self.endpoints.http, x=x)
                        y = np.array(data, np.float32).reshape(x.shape)
                except Exception as error:  # recorded: the test requires none
                    self.failures.append(repr(error))
                    continue
                self.answers.append((version, np.array_equal(y, x * int(version))))

    def count(self, version: str) -> int:
        return sum(1 for v, _ in self.answers if v == version)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)


def test_a_swap_under_load_fails_no_request(tmp_path):
    repo = _repo(tmp_path, 1)
    settings = ServeSettings(max_batch_size=8, max_queue_delay_ms=1)
    with serving(repo, settings) as endpoints, Clients(endpoints) as clients:
        eventually(lambda: clients.count("1") >= 20, "20 answers from version 1")
        make_scale_model(repo / "scale" / "2" / "model.onnx", 2.0)
        response = httpx.post(
            f"http://{endpoints.http}/v2/repository/models/scale/load", timeout=120
        )
        assert response.status_code == 200
        assert index(endpoints.http) == [("scale", "2", "READY")]
        before = len(clients.answers)
        eventually(lambda: clients.count("2") >= 20, "20 answers from version 2")
    assert clients.failures == []
    assert all(correct for _, correct in clients.answers)
    assert {v for v, _ in clients.answers[before + 4 :]} == {"2"}  # 4 clients may be mid-call


def test_requests_the_old_version_holds_finish_there(tmp_path):
    """Requests queued on version 1 (a minute's batch delay holds them) are answered by
    version 1 when version 2 replaces it, at once rather than after the delay."""
    repo = _repo(tmp_path, 1)
    settings = ServeSettings(max_batch_size=64, max_queue_delay_ms=60_000)
    with serving(repo, settings) as endpoints:
        url = endpoints.http

        async def run():
            async with httpx.AsyncClient(timeout=120) as client:
                body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                    "data": X.ravel().tolist()}]}  # fmt: skip
                held = [
                    asyncio.ensure_future(
                        client.post(f"http://{url}/v2/models/scale/infer", json=body)
                    )
                    for _ in range(3)
                ]
                while (
                    'nnspec_queue_depth{model="scale",version="1"} 3.0'
                    not in (await client.get(f"http://{url}/metrics")).text
                ):
                    await asyncio.sleep(0.02)
                make_scale_model(repo / "scale" / "2" / "model.onnx", 2.0)
                load = await client.post(f"http://{url}/v2/repository/models/scale/load")
                return load, await asyncio.gather(*held)

        load, held = asyncio.run(run())
        assert load.status_code == 200
        for response in held:
            answer = response.json()
            assert answer["model_version"] == "1"
            assert answer["outputs"][0]["data"] == X.ravel().tolist()
        full = np.ones((64, 4), np.float32)  # a full batch runs without waiting
        assert rest_infer(url, x=full) == ("2", (full * 2).ravel().tolist())


def test_polling_loads_new_rewritten_and_removed_versions(tmp_path):
    repo = _repo(tmp_path, 1)
    settings = ServeSettings(poll_seconds=0.05)
    with serving(repo, settings) as endpoints:
        url = endpoints.http
        make_scale_model(repo / "scale" / "2" / "model.onnx", 2.0)
        eventually(lambda: index(url) == [("scale", "2", "READY")], "version 2 replaces 1")
        assert rest_infer(url) == ("2", (X * 2).ravel().tolist())

        rewritten = make_scale_model(repo / "scale" / "2" / "model.onnx", 5.0)
        stamp = rewritten.stat().st_mtime_ns + 10**9  # same size: the time tells it changed
        os.utime(rewritten, ns=(stamp, stamp))
        eventually(lambda: rest_infer(url)[1] == (X * 5).ravel().tolist(), "the rewrite served")

        (repo / "scale" / "3").mkdir()
        (repo / "scale" / "3" / "model.onnx").write_bytes(b"not a model")
        metrics = f"http://{url}/metrics"
        failed = 'nnspec_model_loads_total{model="scale",result="failed"}'
        eventually(lambda: failed in httpx.get(metrics).text, "the broken version 3 tried")
        assert rest_infer(url) == ("2", (X * 5).ravel().tolist())  # version 2 still serves

        shutil.rmtree(repo / "scale")
        removed = [("scale", "", "UNAVAILABLE")]
        eventually(lambda: index(url) == removed, "the model's removal applied")
        refused = httpx.post(f"http://{url}/v2/models/scale/infer", json={"inputs": []})
        assert refused.status_code == 503 and "removed from the repository" in refused.text


def test_grpc_load_of_an_unknown_model_is_not_found(tmp_path):
    with serving(_repo(tmp_path, 1)) as endpoints:
        channel = grpc.insecure_channel(endpoints.grpc)
        with channel, contextlib.closing(triton_grpc.InferenceServerClient(endpoints.grpc)) as c:
            with pytest.raises(InferenceServerException, match="no model 'ghost'") as info:
                c.load_model("ghost")
    assert info.value.status() == "StatusCode.NOT_FOUND"
