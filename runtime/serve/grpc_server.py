"""The KServe v2 gRPC server (`GRPCInferenceService`), beside the REST app in each process.

It runs on grpc.aio in the same event loop as uvicorn and calls the same registry, batchers
and inference path as REST, so a model batches requests from both protocols together. The
method table is built from the service descriptor of `proto/kserve_v2.proto`: every RPC the
.proto declares has a method of the same name on :class:`InferenceServicer` (a test checks).
A refused request ends its call with a status code and the same message REST would send:

    400 INVALID_ARGUMENT   404 NOT_FOUND   409 FAILED_PRECONDITION   413 RESOURCE_EXHAUSTED
    503 UNAVAILABLE        500 INTERNAL

Messages up to `max_body_bytes` are received (gRPC's own default is 4 MiB) and any size is
sent; more than `max_connections` calls at once get RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import functools
import time

import grpc
from google.protobuf import json_format

from nnspec.compiler.errors import ServeError
from nnspec.runtime.serve.grpc_messages import (
    SERVICE,
    SERVICE_NAME,
    ModelStreamInferResponse,
    message_class,
)
from nnspec.runtime.serve.grpc_protocol import encode_grpc_response, parse_grpc_request
from nnspec.runtime.serve.inference import ApiError, run_inference, server_metadata
from nnspec.runtime.serve.metrics import ServeMetrics
from nnspec.runtime.serve.model_config import model_config, model_config_message
from nnspec.runtime.serve.registry import ModelRegistry
from nnspec.runtime.serve.settings import ServeSettings

STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# How long a shutdown lets calls in flight finish (the batchers run them at once by then).
SHUTDOWN_GRACE_SECONDS = 300.0


def status_code(http_status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(http_status, grpc.StatusCode.INTERNAL)


def _refusals(method):
    """Turn an ApiError into the call's status code and message."""

    @functools.wraps(method)
    async def handler(self, request, context):
        try:
            return await method(self, request, context)
        except ApiError as error:
            await context.abort(status_code(error.status), error.message)

    return handler


class InferenceServicer:
    """The RPCs of `GRPCInferenceService`, each named as in the .proto."""

    def __init__(self, registry: ModelRegistry, metrics: ServeMetrics):
        self.registry = registry
        self.metrics = metrics

    def _message(self, name: str, **fields):
        return message_class(name)(**fields)

    async def ServerLive(self, request, context):
        return self._message("ServerLiveResponse", live=True)

    async def ServerReady(self, request, context):
        return self._message("ServerReadyResponse", ready=self.registry.is_ready())

    @_refusals
    async def ModelReady(self, request, context):
        ready = self.registry.model_ready(request.name, request.version)
        return self._message("ModelReadyResponse", ready=ready)

    async def ServerMetadata(self, request, context):
        return json_format.ParseDict(server_metadata(), message_class("ServerMetadataResponse")())

    @_refusals
    async def ModelMetadata(self, request, context):
        meta = self.registry.resolve(request.name, request.version).model.metadata()
        if not request.version:
            meta["versions"] = sorted(self.registry.entry(request.name).versions, key=int)
        return json_format.ParseDict(meta, message_class("ModelMetadataResponse")())

    @_refusals
    async def ModelConfig(self, request, context):
        loaded = self.registry.resolve(request.name, request.version)
        config = model_config(loaded, self.registry.entry(request.name).policy)
        return self._message("ModelConfigResponse", config=model_config_message(config))

    async def _infer(self, request):
        registry = self.registry
        with registry.use(request.model_name, request.model_version) as loaded:
            model = loaded.model
            parsed = parse_grpc_request(model, request)
            outputs = await run_inference(model, loaded.batcher, parsed)
        return encode_grpc_response(model, parsed, outputs)

    async def ModelInfer(self, request, context):
        name = request.model_name
        label = name if self.registry.knows(name) else ""
        started, status = time.perf_counter(), 500
        try:
            response = await self._infer(request)
            status = 200
            return response
        except ApiError as error:
            status = error.status
            await context.abort(status_code(error.status), error.message)
        except asyncio.CancelledError:  # the client cancelled or went away
            status = None
            self.metrics.observe_disconnect(label, "grpc")
            raise
        finally:
            if status is not None:
                self.metrics.observe_request(label, "grpc", status, time.perf_counter() - started)

    async def ModelStreamInfer(self, request_iterator, context):
        """Each request on the stream runs as soon as it arrives (so they batch together);
        answers come back in the order they finish, matched by their id."""
        answers: asyncio.Queue = asyncio.Queue()

        async def answer(request) -> None:
            try:
                response = await self._infer(request)
                await answers.put(ModelStreamInferResponse(infer_response=response))
            except ApiError as error:
                await answers.put(ModelStreamInferResponse(error_message=error.message))

        async def read_all() -> None:
            tasks = [asyncio.ensure_future(answer(r)) async for r in request_iterator]
            await asyncio.gather(*tasks)
            await answers.put(None)

        reader = asyncio.ensure_future(read_all())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()

    @_refusals
    async def RepositoryIndex(self, request, context):
        self._check_repository(request.repository_name)
        index = message_class("RepositoryIndexResponse")()
        for row in self.registry.index(ready_only=request.ready):
            index.models.add(**row)
        return index

    @_refusals
    async def RepositoryModelLoad(self, request, context):
        self._check_repository(request.repository_name)
        await self.registry.load(request.model_name, request.parameters)
        return self._message("RepositoryModelLoadResponse")

    @_refusals
    async def RepositoryModelUnload(self, request, context):
        self._check_repository(request.repository_name)
        await self.registry.unload(request.model_name)
        return self._message("RepositoryModelUnloadResponse")

    def _check_repository(self, name: str) -> None:
        if name:
            raise ApiError(404, f"unknown repository {name!r}; this server has one, unnamed")


def method_handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The service's method table, built from the .proto's service descriptor."""
    handlers = {}
    for method in SERVICE.methods:
        request_type = message_class(method.input_type.name)
        response_type = message_class(method.output_type.name)
        implementation = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif not method.client_streaming and not method.server_streaming:
            make = grpc.unary_unary_rpc_method_handler
        else:  # the .proto has no other kind
            raise TypeError(f"{method.name}: unsupported streaming kind")
        handlers[method.name] = make(
            implementation,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def grpc_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class GrpcService:
    """The gRPC server's life in one process: started and drained with the REST app."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: ServeSettings,
        host: str,
        port: int,
        metrics: ServeMetrics | None = None,
    ):
        self.registry = registry
        self.settings = settings
        self.address = grpc_address(host, port)
        self.metrics = metrics or registry.metrics
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task | None = None

    async def start(self) -> None:
        settings = self.settings
        options = [
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # Worker processes share the port (the parent checked it was free and holds it);
            # a single process owns it alone, so that a second server cannot join it.
            ("grpc.so_reuseport", int(settings.workers > 1)),
            ("grpc.server_handshake_timeout_ms", int(settings.header_timeout * 1000)),
        ]
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=settings.max_connections)
        server.add_generic_rpc_handlers(
            (method_handlers(InferenceServicer(self.registry, self.metrics)),)
        )
        try:
            self.port = server.add_insecure_port(self.address)
        except RuntimeError as error:
            raise ServeError(f"cannot listen for gRPC on {self.address}: {error}") from error
        await server.start()
        self._server = server

    def begin_drain(self) -> None:
        """Stop taking new calls; calls in flight go on (see :meth:`stop`)."""
        if self._server is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._server.stop(SHUTDOWN_GRACE_SECONDS))

    async def stop(self) -> None:
        self.begin_drain()
        if self._stopping is not None:
            await self._stopping
