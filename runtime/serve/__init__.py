"""nnspec.runtime.serve: exported ONNX models answer requests.

    from nnspec.runtime.serve import ServeSettings, create_app
    app = create_app(ServeSettings(models=["model.onnx"]))   # a FastAPI app (KServe v2 REST)

Public API:
    create_app(settings) / ServeSettings     the KServe v2 (Open Inference Protocol) REST app
    serve_forever(settings)                  run it on uvicorn until SIGTERM (drains first)
    load_models(sources, ...)                onnxruntime sessions with their metadata
    DynamicBatcher                           Triton-style dynamic batching of requests
    predict(session, info, samples, ...)     offline inference (`nnspec predict`), per task
    task_outputs(record, output)             a task's outputs (label sets, masks) from raw output
"""

from nnspec.runtime.common.lazy import lazy_exports

_EXPORTS = {
    "create_app": "app", "ServeSettings": "app", "serve_forever": "app",
    "load_models": "models", "ServedModel": "models", "DynamicBatcher": "batching",
    "predict": "predict", "read_model_info": "predict", "task_outputs": "tasks",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
