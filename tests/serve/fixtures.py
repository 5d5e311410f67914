"""Small ONNX models and a real server on a free localhost port, for the serve tests."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from nnspec.runtime.serve.app import create_app
from nnspec.runtime.serve.grpc_server import GrpcService
from nnspec.runtime.serve.metrics import ServeMetrics
from nnspec.runtime.serve.models import ServedModel
from nnspec.runtime.serve.registry import ModelRegistry
from nnspec.runtime.serve.repository import ModelRepository, VersionPolicy
from nnspec.runtime.serve.server import bind_socket, build_server
from nnspec.runtime.serve.settings import ServeSettings

DIGIT_LABELS = [f"digit{i}" for i in range(10)]


class TinyConvNet(torch.nn.Module):
    """A digits-like CNN: 1x12x12 images -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    model = onnx.load(str(path))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def make_conv_model(path: Path, labels: list[str] | None = DIGIT_LABELS) -> Path:
    """Export TinyConvNet (seeded weights) with a dynamic batch, like nnspec's exporter does."""
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        torch.onnx.export(
            model,
            (torch.randn(2, 1, 12, 12),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    props = {"nnspec.spec_name": "tiny"}
    if labels is not None:
        props["nnspec.labels"] = json.dumps(labels)
    _add_metadata(path, props)
    return path


def make_any_size_model(path: Path) -> Path:
    """A fully convolutional net taking any image size >= 5x5 (dynamic batch, height, width)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 5), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    ).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.randn(1, 1, 9, 9),),
            str(path),
            input_names=["image"],
            output_names=["scores"],
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "scores": {0: "batch"}},
            dynamo=False,
        )
    return path


def make_two_input_model(path: Path) -> Path:
    """y = a * float(b) (FP32 [-1, 3] x INT64 [-1, 3]) and n = a > 0 (BOOL), via onnx.helper."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["b_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["a", "b_float"], ["y"]),
            helper.make_node("Greater", ["a", "zero"], ["positive"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("positive", TensorProto.BOOL, ["batch", 3]),
        ],
        initializer=[helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_elementwise_model(path: Path, op: str = "Identity", width: str | int = "n") -> Path:
    """y = op(x) on FP32 [batch, width] via onnx.helper (Identity: any size; Log: NaN/Inf)."""
    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"])],
        op.lower(),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_scale_model(path: Path, factor: float) -> Path:
    """y = factor * x on FP32 [batch, 4]: versions of one model told apart by their answers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "factor"], ["y"])],
        "scale",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[helper.make_tensor("factor", TensorProto.FLOAT, [], [factor])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def onnxruntime_reference(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The model's answer from a fresh onnxruntime session, outside the server."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def open_registry(model_path: Path, settings: ServeSettings | None = None) -> ModelRegistry:
    """The models under `model_path`, opened on CPU, as the server opens them."""
    settings = settings or ServeSettings()
    repository = ModelRepository(model_path, VersionPolicy.parse(settings.version_policy))
    registry = ModelRegistry(repository, settings, ServeMetrics())
    registry.open_all()
    return registry


def open_models(model_path: Path, max_batch_size: int = 32) -> dict[str, ServedModel]:
    """The highest served version of each model under `model_path`, opened as the server
    opens it (config.pbtxt applied), without batchers."""
    registry = ModelRegistry(
        ModelRepository(model_path), ServeSettings(max_batch_size=max_batch_size), ServeMetrics()
    )
    models = {}
    for name in registry.repository.names():
        source = registry.repository.read(name)
        models[name] = registry.open_version(source, source.versions[-1])
    return models


@dataclasses.dataclass(frozen=True)
class Endpoints:
    """A test server's REST address ("127.0.0.1:PORT"), gRPC address and registry."""

    http: str
    grpc: str
    registry: ModelRegistry


@contextlib.contextmanager
def serving(model_path: Path, settings: ServeSettings | None = None) -> Iterator[Endpoints]:
    """Serve `model_path` over REST and gRPC on free 127.0.0.1 ports in a thread."""
    settings = settings or ServeSettings()
    registry = open_registry(model_path, settings)
    grpc_service = GrpcService(registry, settings, "127.0.0.1", 0)
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(registry, settings, services=[grpc_service])
    server = build_server(app, settings, log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(500):  # up to ~10 s for startup
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.02)
    if not server.started:
        raise RuntimeError("test server did not start")
    try:
        yield Endpoints(f"127.0.0.1:{port}", f"127.0.0.1:{grpc_service.port}", registry)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def running_server(model_path: Path, settings: ServeSettings | None = None) -> Iterator[str]:
    """Serve `model_path` on 127.0.0.1 (a free port) in a thread; yields "127.0.0.1:PORT"."""
    with serving(model_path, settings) as endpoints:
        yield endpoints.http
