"""The server's settings: what `nnspec serve`'s options set, in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches, what it accepts and how it runs (the `nnspec serve` options).

    Attributes:
        max_batch_size: most rows merged into one onnxruntime call (a config.pbtxt may lower it).
        max_queue_delay_ms: how long a batch waits for more requests before it runs.
        max_queue: waiting requests per model version beyond which new ones get 503.
        instances: onnxruntime calls per model version in flight at once (Triton's
            instance_group count), each on its own thread.
        workers: server processes sharing the ports, each with its own sessions.
        max_body_bytes: largest request body (REST, after decompression) or message (gRPC).
        providers: onnxruntime execution providers, best first.
        version_policy: versions served of a repository model without its own policy
            ("latest", "latest:N", "all", "specific:1,3").
        poll_seconds: how often to re-read the repository (None: never; load/unload only).
        header_timeout: seconds a client has to send a request's headers.
        body_timeout: seconds a client has to send a request's body once its headers are in.
        max_connections: open HTTP connections (and gRPC calls) per process before new
            requests get 503 (gRPC: RESOURCE_EXHAUSTED).
    """

    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue: int = 256
    instances: int = 1
    workers: int = 1
    max_body_bytes: int = 64 * 2**20
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    version_policy: str = "latest:1"
    poll_seconds: float | None = None
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000
