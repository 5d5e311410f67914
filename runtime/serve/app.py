"""The KServe v2 REST app (Open Inference Protocol over HTTP), on FastAPI.

It speaks the v2 health, metadata and inference endpoints, Triton's binary tensor data,
classification, model configuration and model repository extensions (index, load, unload), so
`tritonclient.http`, KServe's SDK and curl work unchanged. Inference goes through the shared
path in `inference.py`; the models, their versions and batchers are the registry's, which the
gRPC server shares. `/metrics` is Prometheus text.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from nnspec.runtime.serve.inference import ApiError, run_inference, server_metadata
from nnspec.runtime.serve.metrics import ServeMetrics
from nnspec.runtime.serve.model_config import model_config
from nnspec.runtime.serve.protocol import HEADER_LENGTH, encode_infer_response, parse_infer_request
from nnspec.runtime.serve.registry import ModelRegistry
from nnspec.runtime.serve.settings import ServeSettings


class Service(Protocol):
    """Something that runs beside the REST app in its process (the gRPC server)."""

    async def start(self) -> None: ...

    def begin_drain(self) -> None: ...

    async def stop(self) -> None: ...


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


async def _json_object(request: Request) -> dict:
    """An optional small JSON object body (repository requests); {} when empty."""
    import json

    body = await _read_body(request, 1 << 20)
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object")
    return payload


def create_app(
    registry: ModelRegistry,
    settings: ServeSettings,
    *,
    metrics: ServeMetrics | None = None,
    services: Sequence[Service] = (),
    on_started: Callable[[], None] = lambda: None,
) -> FastAPI:
    """The ASGI app serving `registry`'s models.

    Its lifespan starts the registry (batchers, polling) and `services` (the gRPC server), and
    on shutdown drains them: `app.state.begin_drain()` (called from a signal handler) makes
    batchers stop waiting for batch-mates and services stop taking new calls. `on_started`
    runs once everything has started.
    """
    metrics = metrics or registry.metrics

    def begin_drain() -> None:
        registry.begin_drain()
        for service in services:
            service.begin_drain()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await registry.start()
        for service in services:
            await service.start()
        loop = asyncio.get_running_loop()
        app.state.begin_drain = lambda: loop.call_soon_threadsafe(begin_drain)
        on_started()
        yield
        # uvicorn has finished its in-flight requests by now; gRPC may still have some.
        begin_drain()
        for service in services:
            await service.stop()
        await registry.stop()

    app = FastAPI(
        title="nnspec serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.metrics = metrics

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message}, error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, error.status_code, error.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect) -> Response:
        # Nobody is there to read an answer; not a server error either.
        return Response(status_code=499)

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        is_ready = registry.is_ready()
        return JSONResponse({"ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2")
    async def metadata() -> dict:
        return server_metadata()

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict:
        meta = registry.resolve(name, version).model.metadata()
        if not version:
            meta["versions"] = sorted(registry.entry(name).versions, key=int)
        return meta

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        is_ready = registry.model_ready(name, version)
        return JSONResponse({"name": name, "ready": is_ready}, 200 if is_ready else 503)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def config(name: str, version: str | None = None) -> dict:
        return model_config(registry.resolve(name, version), registry.entry(name).policy)

    @app.post("/v2/repository/index")
    async def repository_index(request: Request) -> list:
        payload = await _json_object(request)
        return registry.index(ready_only=payload.get("ready") is True)

    @app.post("/v2/repository/models/{name}/load")
    async def repository_load(name: str, request: Request) -> dict:
        parameters = (await _json_object(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(400, "'parameters' must be an object")
        await registry.load(name, parameters)
        return {}

    @app.post("/v2/repository/models/{name}/unload")
    async def repository_unload(name: str, request: Request) -> dict:
        await _json_object(request)
        await registry.unload(name)
        return {}

    # The hot path is a plain Starlette route: FastAPI's parameter handling would cost more
    # per request than the whole protocol parsing of a small model.
    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        started, status = time.perf_counter(), 500
        label = name if registry.knows(name) else ""
        try:
            response = await _infer(name, version, request)
            status = 200
            return response
        except ApiError as error:
            status = error.status
            raise
        except ClientDisconnect:
            status = None
            metrics.observe_disconnect(label, "http")
            raise
        finally:
            if status is not None:
                metrics.observe_request(label, "http", status, time.perf_counter() - started)

    app.add_route("/v2/models/{name}/infer", infer, methods=["POST"])
    app.add_route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"])

    async def _infer(name: str, version: str | None, request: Request) -> Response:
        registry.resolve(name, version)  # an unknown model is refused before its body is read
        body = await _read_body(request, settings.max_body_bytes)
        with registry.use(name, version) as loaded:
            model = loaded.model
            parsed = parse_infer_request(model, body, _header_length(request))
            outputs = await run_inference(model, loaded.batcher, parsed)
        content, header_length = encode_infer_response(model, parsed, outputs)
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
