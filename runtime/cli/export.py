"""`nnspec export RUN_DIR_OR_SPEC -o model.onnx [--quantize int8] [--triton-repo DIR] ...`."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnspec.compiler.errors import ExportError, UsageError
from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnspec.runtime.export.exporter import CHECKPOINTS, DEFAULT_OPSET
    from nnspec.runtime.export.triton_repo import DEFAULT_MAX_BATCH_SIZE

    parser.add_argument(
        "source",
        metavar="RUN_DIR_OR_SPEC",
        help="a training run directory, or a spec (path or zoo name)",
    )
    parser.add_argument(
        "-o",
        "--output",
        help="ONNX file to write (default: <spec name>.onnx in the current folder)",
    )
    parser.add_argument(
        "--checkpoint",
        choices=CHECKPOINTS,
        default="best",
        help="run checkpoint to export (default: best)",
    )
    parser.add_argument(
        "--weights", metavar="W.safetensors", help="weights to load instead of a run checkpoint"
    )
    parser.add_argument(
        "--ema",
        action="store_true",
        help="export the checkpoint's moving average of the weights (a run trained with "
        "train.ema)",
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ai.onnx opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--batch",
        default="dynamic",
        metavar="N|dynamic",
        help="fixed batch size, or dynamic (default)",
    )
    parser.add_argument(
        "--no-fold-bn",
        dest="fold_bn",
        action="store_false",
        help="keep BatchNormalization nodes (in inference form) instead of folding them",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip onnx.checker and the onnxruntime parity check",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="also write <output>.int8.onnx and compare it with float32",
    )
    parser.add_argument(
        "--calibration-data",
        metavar="SOURCE",
        help="data for int8 calibration (default: the run's training data; random for a bare spec)",
    )
    parser.add_argument(
        "--triton-repo", metavar="DIR", help="also write a Triton model repository here"
    )
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"max_batch_size in the Triton config (default {DEFAULT_MAX_BATCH_SIZE})",
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        return _export(args)
    except OSError as error:  # disk full, permission denied, a file that vanished
        where = f": {error.filename}" if error.filename else ""
        raise ExportError(f"export stopped: {error.strerror or error}{where}") from error


def _export(args: argparse.Namespace) -> int:
    from nnspec.runtime.export.exporter import build_for_export, export_onnx, locate_model_files

    batch = _parse_batch(args.batch)
    files = locate_model_files(
        args.source, checkpoint=args.checkpoint, weights=args.weights, ema=args.ema
    )
    spec = spec_from_args(args, source=str(files.spec))
    model = build_for_export(spec, files)
    output = Path(args.output or f"{spec.name}.onnx")
    result = export_onnx(
        model, output, opset=args.opset, batch=batch, fold_bn=args.fold_bn, verify=args.verify
    )

    size = result.size_bytes
    shown_size = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
    shown_batch = "dynamic" if batch is None else str(batch)
    print(
        f"exported {spec.name} -> {result.path} ({shown_size}, opset {result.opset}, batch {shown_batch})"
    )
    if result.fold is not None:
        print(f"  batch norm: {result.fold}")
    print("  ops: " + ", ".join(f"{op} {n}" for op, n in result.op_counts.items()))
    if result.parity is not None:
        print("  onnx.checker: ok")
        print(f"  onnxruntime vs PyTorch: {result.parity}")

    served = result.path
    if args.quantize:
        from nnspec.runtime.export.exporter import is_run_dir, model_normalization, sample_shape
        from nnspec.runtime.export.quantize import export_int8, quantization_data

        run_source = _run_data_source(spec) if is_run_dir(args.source) else None
        data = quantization_data(
            sample_shape(model),
            args.calibration_data or run_source,
            model_normalization(model),
            spec=spec,
        )
        served = result.path.with_suffix(".int8.onnx")
        print(f"  calibrating int8 on {len(data.calibration)} samples from {data.source}")
        for line in export_int8(result.path, served, data).lines():
            print(f"  {line}")
    if args.triton_repo:
        from nnspec.runtime.export.triton_repo import write_triton_repository

        labels = list(spec.labels) if getattr(spec, "labels", None) else None
        model_dir = write_triton_repository(
            served, args.triton_repo, spec.name, max_batch_size=args.max_batch_size, labels=labels
        )
        print(f"  Triton model repository: {model_dir}")
    _track_export(args.source, result.path)
    return 0


def _track_export(source: str, path: Path) -> None:
    """Add the ONNX file to the trackers the run used (MLflow, W&B); a tracker that cannot be
    reached costs a warning, not the export."""
    from nnspec.runtime.export.exporter import is_run_dir
    from nnspec.runtime.train.tracking.session import log_run_artifact

    if not is_run_dir(source):
        return
    try:
        names = log_run_artifact(Path(source), path)
    except Exception as error:  # noqa: BLE001 (any tracker failure; the export itself is done)
        print(f"  warning: could not add {path.name} to the run's trackers: {error}")
        return
    if names:
        print(f"  tracked as an artifact in: {', '.join(names)}")


def _parse_batch(text: str) -> int | None:
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise UsageError(f"--batch expects a positive integer or 'dynamic', got {text!r}")


def _run_data_source(spec) -> str:
    """The data source a run was trained on: training writes its effective settings into the
    run's resolved spec."""
    from nnspec.compiler.training_schema import TrainConfig

    train = spec.train if spec.train is not None else TrainConfig()
    return train.data
