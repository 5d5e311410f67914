"""nnspec.runtime.serve: exported ONNX models answer requests (KServe v2 REST and gRPC).

    from nnspec.runtime.serve import ModelRegistry, ModelRepository, ServeSettings, create_app
    settings = ServeSettings()
    registry = ModelRegistry(ModelRepository("repo/"), settings, ServeMetrics())
    registry.open_all()
    app = create_app(registry, settings)      # a FastAPI app (KServe v2 REST)

Public API:
    create_app(registry, settings)            the KServe v2 (Open Inference Protocol) REST app
    GrpcService(registry, settings, host, port)   the KServe v2 gRPC server beside it
    run_server(path, settings, endpoints, sock)   both in one process until SIGTERM (drains)
    run_workers(path, settings, host, ports)  the same in N worker processes
    ServeSettings                             the server's settings (`nnspec serve` options)
    ModelRepository / VersionPolicy           models, versions and config.pbtxt on disk
    ModelRegistry                             served versions, load/unload/polling, batchers
    ServeMetrics                              Prometheus metrics (multiprocess-aware)
    open_model / ServedModel                  one onnxruntime session with its metadata
    DynamicBatcher                            Triton-style dynamic batching of requests
    predict(session, info, samples, ...)      offline inference (`nnspec predict`), per task
    task_outputs(record, output)              a task's outputs (label sets, masks) from raw output
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "create_app": "app", "GrpcService": "grpc_server", "run_server": "server",
    "run_workers": "workers", "ServeSettings": "settings", "ModelRepository": "repository",
    "VersionPolicy": "repository", "ModelRegistry": "registry", "ServeMetrics": "metrics",
    "open_model": "models", "ServedModel": "models", "DynamicBatcher": "batching",
    "predict": "predict", "read_model_info": "predict", "task_outputs": "tasks",
}  # fmt: skip
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
