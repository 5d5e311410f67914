"""One server process: the REST app on uvicorn and the gRPC server, in one event loop.

`run_server` opens the models, builds both front ends on one registry and serves until
SIGTERM or SIGINT. On either signal uvicorn stops accepting connections and waits for the
requests in flight, the gRPC server stops taking calls and finishes its own, and the batchers
stop waiting for batch-mates that can no longer arrive.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnspec.compiler.errors import ServeError
from nnspec.runtime.serve.settings import ServeSettings


@dataclass(frozen=True)
class Endpoints:
    """Where a server listens: one host, the REST port and the gRPC port."""

    host: str
    http_port: int
    grpc_port: int

    def http_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"

    def grpc_target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}"


def bind_socket(
    host: str, port: int, *, reuse_port: bool = False, flag: str = "--port"
) -> socket.socket:
    """A listening socket on host:port (port 0: any free port); ServeError if it is taken.

    With `reuse_port` it joins the worker processes' group on a port that `hold_port` holds.
    """
    sock = _socket(host)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    _bind(sock, host, port, flag)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def hold_port(host: str, port: int, flag: str = "--port") -> socket.socket:
    """Hold host:port (0: a free port) for worker processes that will share it.

    A plain bind first proves nobody has the port. The holding socket then sets SO_REUSEPORT
    (so the workers' sockets may join it) but not SO_REUSEADDR, so another server's check fails
    instead of joining the group; bound but not listening, it takes no connection itself.
    """
    port = _free_port(host, port, flag)
    sock = _socket(host)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    _bind(sock, host, port, flag)
    return sock


def free_port(host: str, port: int, flag: str = "--grpc-port") -> int:
    """`port` (or, for 0, a free port) once a plain bind shows nobody listens there."""
    return _free_port(host, port, flag)


def _free_port(host: str, port: int, flag: str) -> int:
    with _socket(host) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        _bind(probe, host, port, flag)
        return probe.getsockname()[1]


def _socket(host: str) -> socket.socket:
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)


def _bind(sock: socket.socket, host: str, port: int, flag: str) -> None:
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServeError(
            f"cannot listen on {host}:{port}: {error.strerror}; "
            f"is another server using it? choose another with {flag}",
        ) from error


def build_server(app, settings: ServeSettings, *, access_log: bool = False, log_level="info"):
    """A uvicorn server for `app` with request deadlines, a connection limit and draining.

    On SIGTERM/SIGINT uvicorn stops accepting connections and waits for in-flight requests;
    `app.state.begin_drain` tells the batchers and the gRPC server at the same moment.
    """
    import uvicorn

    from nnspec.runtime.serve.timeouts import timed_http_protocol

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            super().handle_exit(sig, frame)
            begin_drain = getattr(app.state, "begin_drain", None)
            if begin_drain is not None:
                begin_drain()

    metrics = getattr(app.state, "metrics", None)

    def on_timeout(phase: str) -> None:
        if metrics is not None:
            metrics.observe_timeout(phase)

    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=access_log,
        log_level=log_level,
        http=timed_http_protocol(settings.header_timeout, settings.body_timeout, on_timeout),
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=None,  # wait for every in-flight request
    )
    return DrainingServer(config)


def serve_forever(app, sock: socket.socket, settings: ServeSettings, *, access_log=False) -> None:
    """Run until SIGTERM or SIGINT; returns normally after a graceful shutdown.

    Raises:
        ServeError: the server failed to start (its log says why).
    """
    server = build_server(app, settings, access_log=access_log)
    # uvicorn re-raises the signal it shut down for once it is done; with this no-op handler
    # in place that re-raise is harmless and SIGTERM ends the process with exit code 0.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise ServeError("the server failed to start (see the messages above)")


def describe_models(registry) -> list[str]:
    """One line per served model, for the startup banner."""
    lines = []
    for name in registry.names:
        entry = registry.entry(name)
        loaded = entry.default()
        if loaded is None:
            continue
        model = loaded.model
        versions = ", ".join(sorted(entry.versions, key=int))
        inputs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in model.inputs)
        batching = "no batching"
        if model.max_batch_size > 1:
            batching = f"batches up to {model.max_batch_size}"
        lines.append(f"  {name} (version {versions}; {inputs}; {batching}; {model.provider})")
    return lines


def run_server(
    model_path: str | Path,
    settings: ServeSettings,
    endpoints: Endpoints,
    http_socket: socket.socket,
    *,
    access_log: bool = False,
    on_ready: Callable[[list[str]], None] = lambda lines: None,
) -> None:
    """Open the models under `model_path` and serve them until a signal.

    Args:
        model_path: a model file, folder or repository (see `repository.py`).
        settings: the server's settings.
        endpoints: the host and ports (the gRPC port free, or held for the workers).
        http_socket: the listening REST socket.
        on_ready: called with the banner's model lines once both protocols listen.

    Raises:
        ServeError: a model cannot be opened, or the server fails to start.
    """
    from nnspec.runtime.serve.app import create_app
    from nnspec.runtime.serve.grpc_server import GrpcService
    from nnspec.runtime.serve.metrics import ServeMetrics
    from nnspec.runtime.serve.registry import ModelRegistry
    from nnspec.runtime.serve.repository import ModelRepository, VersionPolicy

    metrics = ServeMetrics()
    repository = ModelRepository(model_path, VersionPolicy.parse(settings.version_policy))
    registry = ModelRegistry(repository, settings, metrics)
    registry.open_all()
    grpc_service = GrpcService(registry, settings, endpoints.host, endpoints.grpc_port)
    app = create_app(
        registry,
        settings,
        metrics=metrics,
        services=[grpc_service],
        on_started=lambda: on_ready(describe_models(registry)),
    )
    serve_forever(app, http_socket, settings, access_log=access_log)
