"""`nnspec predict MODEL.onnx INPUT... [--top-k 5] [--mask-dir DIR] [--provider ...] [--json]`:
per the model's task, the top classes, the label set, the values, or a mask PNG per input."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnspec.runtime.export.providers import CHOICES

    parser.add_argument("model", help="an ONNX model exported by nnspec export")
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image files, .npy or .npz arrays"
    )
    parser.add_argument(
        "--top-k", type=int, default=5, help="classes to show per input (default 5)"
    )
    parser.add_argument(
        "--mask-dir",
        default="masks",
        metavar="DIR",
        help="where a segmentation model's masks go, one PNG per input (default ./masks)",
    )
    parser.add_argument(
        "--provider",
        choices=CHOICES,
        default="auto",
        help="onnxruntime execution provider (default auto)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.export.providers import resolve_providers
    from nnspec.runtime.serve.predict import load_inputs, open_session, predict, read_model_info

    info = read_model_info(args.model)
    samples = load_inputs(args.inputs, info)
    session = open_session(info, resolve_providers(args.provider))
    results = predict(session, info, samples, top_k=args.top_k, mask_dir=args.mask_dir)
    if args.json:
        payload = {
            "model": str(info.path),
            "task": info.record.task_type,
            "provider": session.get_providers()[0],
            "predictions": [r.to_json() for r in results],
        }
        print(json.dumps(payload, indent=2))
        return 0
    for result in results:
        print(result.source)
        for line in result.lines:
            print(line)
    return 0
