"""`nnspec serve`: onnxruntime models behind the Open Inference Protocol v2 (KServe v2 REST).

The ASGI app (FastAPI on uvicorn) speaks the v2 health, metadata and inference endpoints, the
repository index, Triton's binary tensor data and classification extensions and Triton's
model configuration endpoint, so `tritonclient.http`, KServe's SDK and curl work unchanged.
Requests for a model go through its :class:`DynamicBatcher`; `/metrics` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from nnspec.compiler.errors import ServeError
from nnspec.runtime.common.version import nnspec_version
from nnspec.runtime.serve.batching import DynamicBatcher, QueueFull
from nnspec.runtime.serve.metrics import ServeMetrics
from nnspec.runtime.serve.models import ServedModel
from nnspec.runtime.serve.protocol import (
    HEADER_LENGTH,
    ApiError,
    encode_infer_response,
    parse_infer_request,
)

EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository"]
# Triton's model configuration names for KServe datatypes (BYTES is TYPE_STRING there).
TRITON_TYPES = {"BYTES": "TYPE_STRING"}


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches and what it accepts (the `nnspec serve` options)."""

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue: int = 256
    workers: int = 1
    max_body_bytes: int = 64 * 2**20


def intra_op_threads(workers: int) -> int:
    """onnxruntime threads per call so that `workers` concurrent calls share the cores.

    0 (onnxruntime's own default: all physical cores) when calls run one at a time.
    """
    return 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding == "identity":
        return body
    # zlib's wbits: 16+15 reads a gzip wrapper, 15 a zlib one ("deflate" in HTTP).
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        body = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise ApiError(400, f"request body is not valid {encoding} data: {error}") from error
    if len(body) > limit:
        raise ApiError(413, f"decompressed request body exceeds the {limit}-byte limit")
    return body


def _header_length(request: Request) -> int | None:
    value = request.headers.get(HEADER_LENGTH)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ApiError(400, f"{HEADER_LENGTH} must be a byte count, got {value!r}")
    return int(value)


def _model_config(model: ServedModel, settings: ServeSettings) -> dict:
    """Triton's model configuration (JSON form), so Triton-minded tools can read it."""
    batched = model.batchable

    def tensor(meta):
        dims = list(meta.shape[1:] if batched else meta.shape)
        data_type = TRITON_TYPES.get(meta.datatype, f"TYPE_{meta.datatype}")
        return {"name": meta.name, "data_type": data_type, "dims": dims}

    config = {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": model.max_batch_size if batched else 0,
        "input": [tensor(t) for t in model.inputs],
        "output": [tensor(t) for t in model.outputs],
        "parameters": {k: {"string_value": v} for k, v in sorted(model.properties.items())},
    }
    if batched and model.max_batch_size > 1:
        delay_us = int(settings.max_queue_delay_ms * 1000)
        config["dynamic_batching"] = {"max_queue_delay_microseconds": delay_us}
    return config


def _model_error(error: Exception) -> ApiError:
    """A failed model call: onnxruntime's InvalidArgument means the input did not suit it."""
    if type(error).__name__ == "InvalidArgument":
        return ApiError(400, f"the model rejected the input: {error}")
    return ApiError(500, f"the model failed: {error}")


def create_app(models: dict[str, ServedModel], settings: ServeSettings) -> FastAPI:
    """The ASGI app serving `models`; batchers start and drain with the app's lifespan."""
    if not models:
        raise ServeError("no models to serve")
    metrics = ServeMetrics()
    batchers: dict[str, DynamicBatcher] = {}
    server_info = {"name": "nnspec", "version": nnspec_version(), "extensions": EXTENSIONS}

    def drain_batchers() -> None:
        for batcher in batchers.values():
            batcher.begin_drain()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        executor = ThreadPoolExecutor(
            max_workers=settings.workers * len(models), thread_name_prefix="nnspec-onnxruntime"
        )
        for name, model in models.items():
            batcher = DynamicBatcher(
                model.run,
                executor,
                max_batch_size=model.max_batch_size,
                max_queue_delay=settings.max_queue_delay_ms / 1000,
                max_queue=settings.max_queue,
                workers=settings.workers,
                on_batch=lambda rows, name=name: metrics.observe_batch(name, rows),
            )
            batcher.start()
            batchers[name] = batcher
            metrics.track_queue(name, lambda batcher=batcher: batcher.queue_depth)
        loop = asyncio.get_running_loop()
        # Called from a signal handler: hand the work to the loop thread-safely.
        app.state.begin_drain = lambda: loop.call_soon_threadsafe(drain_batchers)
        yield
        # uvicorn has finished in-flight requests by now; drain whatever is left anyway.
        await asyncio.gather(*(b.stop() for b in batchers.values()))
        batchers.clear()
        executor.shutdown(wait=True)

    app = FastAPI(
        title="nnspec serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, error.status_code, error.headers)

    def lookup(name: str, version: str | None = None) -> ServedModel:
        model = models.get(name)
        if model is None:
            known = ", ".join(sorted(models))
            raise ApiError(404, f"unknown model {name!r}; this server has: {known}")
        if version not in (None, "", model.version):
            raise ApiError(404, f"model {name!r} has no version {version!r} (only {model.version})")
        return model

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        is_ready = len(batchers) == len(models)
        return JSONResponse({"ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict:
        return server_info

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict:
        return lookup(name, version).metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        is_ready = lookup(name, version).name in batchers
        return JSONResponse({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None) -> dict:
        return _model_config(lookup(name, version), settings)

    @app.post("/v2/repository/index")
    async def repository_index() -> list:
        return [
            {"name": m.name, "version": m.version, "state": "READY", "reason": ""}
            for m in sorted(models.values(), key=lambda m: m.name)
        ]

    # The hot path is a plain Starlette route: FastAPI's parameter handling would cost more
    # per request than the whole protocol parsing of a small model.
    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        started, status = time.perf_counter(), 500
        try:
            response = await _infer(lookup(name, version), request)
            status = 200
            return response
        except ApiError as error:
            status = error.status
            raise
        finally:
            label = name if name in models else ""
            metrics.observe_request(label, status, time.perf_counter() - started)

    app.add_route("/v2/models/{name}/infer", infer, methods=["POST"])
    app.add_route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"])

    async def _infer(model: ServedModel, request: Request) -> Response:
        body = await _read_body(request, settings.max_body_bytes)
        parsed = parse_infer_request(model, body, _header_length(request))
        problem = model.input_problem(parsed.inputs)
        if problem is not None:
            raise ApiError(400, problem)
        try:
            results = await batchers[model.name].submit(parsed.inputs, parsed.rows)
        except QueueFull as error:
            raise ApiError(
                503,
                f"model {model.name!r} has {settings.max_queue} requests waiting; retry shortly",
                {"Retry-After": "1"},
            ) from error
        except Exception as error:
            raise _model_error(error) from error
        content, header_length = encode_infer_response(model, parsed, results)
        if header_length is None:
            return Response(content, media_type="application/json")
        return Response(
            content,
            media_type="application/octet-stream",
            headers={HEADER_LENGTH: str(header_length)},
        )

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port); ServeError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {error.strerror}; "
            "is another server using it? choose another with --port",
        ) from error
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_server(app: FastAPI, *, access_log: bool = False, log_level: str = "info"):
    """A uvicorn server for `app` that, on SIGTERM/SIGINT, stops accepting and drains.

    uvicorn stops accepting connections and waits for in-flight requests; the batchers are
    told at the same moment to stop waiting for batch-mates that can no longer arrive.
    """
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            begin_drain = getattr(app.state, "begin_drain", None)
            if begin_drain is not None:
                begin_drain()

    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=None,  # wait for every in-flight request
    )
    return DrainingServer(config)


def serve_forever(app: FastAPI, sock: socket.socket, *, access_log: bool = False) -> None:
    """Run until SIGTERM or SIGINT; returns normally after a graceful SIGTERM shutdown."""
    server = build_server(app, access_log=access_log)
    # uvicorn re-raises the signal it shut down for once it is done; with this no-op handler
    # in place that re-raise is harmless and SIGTERM ends the process with exit code 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
