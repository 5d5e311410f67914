"""`nnspec train SPEC`: compile a spec and train it into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file or zoo name")
    parser.add_argument(
        "--data",
        metavar="SOURCE",
        help="digits | synthetic[:classes=10,shape=3x32x32,n=512] | FILE.npz | IMAGE_DIR | "
        "torchvision:NAME[:ROOT] (default: the spec's train.data, else digits)",
    )
    parser.add_argument("--epochs", type=int, metavar="N", help="default: train.epochs (10)")
    parser.add_argument(
        "--batch-size", type=int, metavar="N", help="per process; default: train.batch_size (64)"
    )
    parser.add_argument("--seed", type=int, metavar="N", help="default: train.seed (0)")
    parser.add_argument(
        "--out", type=Path, metavar="RUN_DIR", help="run directory (default: runs/NAME[-k])"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run's `last` checkpoint"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="mixed precision on CUDA (dtype: train.amp_dtype, bfloat16 by default)",
    )
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar with ETA (default: on a terminal only)",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="WEIGHTS",
        help="start from these weights, matched by spec id and shape: W.safetensors, a run "
        "directory (its best checkpoint) or a .pth state_dict",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="with --init-from: fail unless every tensor fits (no missing, unexpected or "
        "shape-skipped ones)",
    )
    parser.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="TRACKER[:TARGET]",
        help="also track in mlflow[:URI] (default: local store mlruns/) or "
        "wandb[:[ENTITY/]PROJECT] (offline without a W&B login); repeatable",
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.train.tracking.session import parse_track
    from nnspec.runtime.train.trainer import TrainOptions, train

    spec = spec_from_args(args)
    options = TrainOptions(
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        amp=args.amp,
        channels_last=args.channels_last,
        compile=args.compile,
        out=args.out,
        resume=args.resume,
        device=args.device,
        progress=args.progress,
        init_from=args.init_from,
        strict=args.strict,
        track=args.track,
    )
    if args.strict and args.init_from is None:
        raise UsageError("--strict applies to --init-from; give the weights to start from")
    parse_track(args.track)  # a misspelt tracker fails before any work
    train(spec, options)
    return 0
