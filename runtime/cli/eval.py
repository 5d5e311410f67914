"""`nnspec eval RUN_DIR`: loss and the task's metrics of a trained run on a data split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory written by `nnspec train`")
    parser.add_argument("--data", metavar="SOURCE", help="default: the data the run trained on")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"))
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--batch-size", type=int, default=256, metavar="N")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.train.evaluate import evaluate_run

    result = evaluate_run(
        args.run_dir,
        data=args.data,
        split=args.split,
        checkpoint=args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    from nnspec.runtime.train.records import metric_text

    metrics = {k: v for k, v in result.items() if k not in ("run", "checkpoint", "data", "split",
                                                           "task")}  # fmt: skip
    print(
        f"{result['run']} [{result['checkpoint']}] on {result['data']} {result['split']}: "
        f"{metric_text(metrics)}, loss {result['loss']:.4f} ({result['count']} samples)"
    )
    return 0
