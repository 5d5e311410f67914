"""Prometheus metrics of one server.

A single-process server keeps its metrics in its own registry (several apps can coexist in one
Python process, as in the tests). With worker processes (`--workers N`) every process writes
its samples to files in a shared folder (prometheus-client's multiprocess mode, switched on by
`PROMETHEUS_MULTIPROC_DIR` before prometheus_client is imported), and whichever worker answers
`GET /metrics` reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ServeMetrics:
    """Requests by status and protocol, latency, rows per model call, queue depth, client
    disconnects, request timeouts and model loads."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_ENV) or None
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "nnspec_inference_requests",
            "Inference requests by model, protocol and HTTP status (for gRPC: the HTTP status "
            "of the same error over REST)",
            ["model", "protocol", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "nnspec_inference_latency_seconds",
            "Time from receiving an inference request to its response",
            ["model", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "nnspec_batch_size",
            "Rows per onnxruntime call (after dynamic batching)",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "nnspec_queue_depth",
            "Requests waiting for a model call, by model version",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.disconnects = Counter(
            "nnspec_client_disconnects",
            "Inference requests whose client went away before the response (not errors)",
            ["model", "protocol"],
            registry=registry,
        )
        self.timeouts = Counter(
            "nnspec_request_timeouts",
            "HTTP connections closed because headers or body did not arrive in time",
            ["phase"],
            registry=registry,
        )
        self.model_loads = Counter(
            "nnspec_model_loads",
            "Model versions opened by startup, load requests and polling, by result",
            ["model", "result"],
            registry=registry,
        )

    def observe_request(self, model: str, protocol: str, status: int, seconds: float) -> None:
        self.requests.labels(model, protocol, str(status)).inc()
        self.latency.labels(model, protocol).observe(seconds)

    def observe_disconnect(self, model: str, protocol: str) -> None:
        self.disconnects.labels(model, protocol).inc()

    def observe_timeout(self, phase: str) -> None:
        self.timeouts.labels(phase).inc()

    def observe_batch(self, model: str, rows: int) -> None:
        self.batch_size.labels(model).observe(rows)

    def observe_load(self, model: str, ok: bool) -> None:
        self.model_loads.labels(model, "ok" if ok else "failed").inc()

    def set_queue_depth(self, model: str, version: str, depth: int) -> None:
        self.queue_depth.labels(model, version).set(depth)

    def render(self) -> bytes:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)
        return generate_latest(merged)
