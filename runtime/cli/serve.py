"""`nnspec serve MODEL.onnx|DIR`: serve ONNX models over the Open Inference Protocol v2."""

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
    parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
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
        help="waiting requests per model beyond which new ones get 503 + Retry-After",
    )
    parser.add_argument("--provider", choices=CHOICES, default="auto")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="onnxruntime calls per model in flight at once; the CPU threads are split "
        "between them (one process, one batcher)",
    )
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=64.0,
        help="largest request body accepted, in MiB (larger: 413)",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")


def _check(args: argparse.Namespace) -> None:
    positive = {
        "--max-batch-size": args.max_batch_size,
        "--max-queue": args.max_queue,
        "--workers": args.workers,
        "--max-body-mb": args.max_body_mb,
    }
    for flag, value in positive.items():
        if value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")
    if args.max_queue_delay_ms < 0:
        raise UsageError(f"--max-queue-delay-ms must be >= 0, got {args.max_queue_delay_ms}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.export.providers import resolve_providers
    from nnspec.runtime.serve.app import (
        ServeSettings,
        bind_socket,
        create_app,
        intra_op_threads,
        serve_forever,
    )
    from nnspec.runtime.serve.models import load_models

    _check(args)
    settings = ServeSettings(
        max_batch_size=args.max_batch_size,
        max_queue_delay_ms=args.max_queue_delay_ms,
        max_queue=args.max_queue,
        workers=args.workers,
        max_body_bytes=int(args.max_body_mb * 2**20),
    )
    providers = resolve_providers(args.provider)
    models = load_models(
        args.model,
        providers=providers,
        max_batch_size=settings.max_batch_size,
        intra_op_threads=intra_op_threads(settings.workers),
    )
    app = create_app(models, settings)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
    print(f"serving {len(models)} model(s) on {base}", flush=True)
    for model in models.values():
        inputs = ", ".join(f"{t.name} {t.datatype}{list(t.shape)}" for t in model.inputs)
        batching = "no batching"
        if model.max_batch_size > 1:
            batching = f"batches up to {model.max_batch_size}"
        provider = model.session.get_providers()[0]  # what onnxruntime actually uses
        print(f"  {base}/v2/models/{model.name}  ({inputs}; {batching}; {provider})", flush=True)
    serve_forever(app, sock, access_log=args.access_log)
    return 0
