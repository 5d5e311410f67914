"""`nnspec serve MODEL.onnx|DIR`: serve ONNX models over the Open Inference Protocol v2
(KServe v2 REST and gRPC)."""

from __future__ import annotations

import argparse

from nnspec.compiler.errors import UsageError
from nnspec.runtime.export.providers import CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="an .onnx file, a folder of .onnx files, a Triton model repository "
        "(DIR/<name>/<version>/model.onnx) or one model's folder in it",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="REST port (0: any free port)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=32,
        help="most rows merged into one onnxruntime call (1: no dynamic batching)",
    )
    parser.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=2.0,
        help="how long a batch may wait for more requests before it runs",
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=256,
        help="waiting requests per model version beyond which new ones get 503 + Retry-After",
    )
    parser.add_argument(
        "--provider",
        choices=CHOICES,
        default="auto",
        help="onnxruntime execution provider (auto: the best this build offers); cuda and "
        "tensorrt run with I/O binding and pinned input buffers",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="onnxruntime calls per model version in flight at once, each on its own thread "
        "(Triton's instance_group count); a config.pbtxt instance_group overrides it",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the ports, each with its own onnxruntime sessions; "
        "the CPU cores are split between workers x instances",
    )
    parser.add_argument(
        "--version-policy",
        default="latest:1",
        help="versions served of a repository model whose config.pbtxt sets none: latest, "
        "latest:N, all or specific:V1,V2",
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=None,
        help="re-read the model repository this often and load new, changed or removed "
        "versions (default: only at startup and on load/unload requests)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=64.0,
        help="largest request body (REST) or message (gRPC) accepted, in MiB",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's headers (then 408)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds a client has to send a request's body once its headers are in",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=1000,
        help="open HTTP connections and gRPC calls per process before new requests get 503",
    )
    parser.add_argument("--access-log", action="store_true", help="log every REST request")


def _check(args: argparse.Namespace) -> None:
    positive = {
        "--max-batch-size": args.max_batch_size,
        "--max-queue": args.max_queue,
        "--instances": args.instances,
        "--workers": args.workers,
        "--max-body-mb": args.max_body_mb,
        "--header-timeout": args.header_timeout,
        "--body-timeout": args.body_timeout,
        "--max-connections": args.max_connections,
    }
    if args.poll_seconds is not None:
        positive["--poll-seconds"] = args.poll_seconds
    for flag, value in positive.items():
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.max_queue_delay_ms < 0:
        raise UsageError(f"--max-queue-delay-ms must be >= 0, got {args.max_queue_delay_ms}")
    for flag, port in (("--port", args.port), ("--grpc-port", args.grpc_port)):
        if not 0 <= port <= 65535:
            raise UsageError(f"{flag} must be between 0 and 65535, got {port}")
    if args.port == args.grpc_port != 0:
        raise UsageError(f"--port and --grpc-port are both {args.port}; give them different ports")


def _banner(endpoints, lines: list[str], workers: int) -> None:
    processes = f", {workers} worker processes" if workers > 1 else ""
    print(
        f"serving {len(lines)} model(s) on {endpoints.http_url()} (REST) and "
        f"{endpoints.grpc_target()} (gRPC){processes}",
        flush=True,
    )
    for line in lines:
        print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.export.providers import resolve_providers
    from nnspec.runtime.serve.repository import VersionPolicy
    from nnspec.runtime.serve.server import Endpoints, bind_socket, free_port, run_server
    from nnspec.runtime.serve.settings import ServeSettings

    _check(args)
    try:
        VersionPolicy.parse(args.version_policy)
    except Exception as error:
        raise UsageError(f"--version-policy: {error}") from error
    settings = ServeSettings(
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue=args.max_queue,
        instances=args.instances,
        workers=args.workers,
        max_body_bytes=int(args.max_body_mb * 2**20),
        providers=tuple(resolve_providers(args.provider)),
        version_policy=args.version_policy,
        poll_seconds=args.poll_seconds,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        max_connections=args.max_connections,
    )
    if settings.workers > 1:
        from nnspec.runtime.serve.workers import run_workers

        return run_workers(
            args.model,
            settings,
            args.host,
            args.port,
            args.grpc_port,
            access_log=args.access_log,
            on_ready=lambda endpoints, lines: _banner(endpoints, lines, settings.workers),
        )
    http_socket = bind_socket(args.host, args.port)
    grpc_port = free_port(args.host, args.grpc_port)
    endpoints = Endpoints(args.host, http_socket.getsockname()[1], grpc_port)
    run_server(
        args.model,
        settings,
        endpoints,
        http_socket,
        access_log=args.access_log,
        on_ready=lambda lines: _banner(endpoints, lines, 1),
    )
    return 0
