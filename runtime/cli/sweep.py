"""`nnspec sweep SPEC --grid key=v1,v2 [--seeds N] [--backend local|ray] --out DIR`."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from nnspec.compiler.errors import UsageError
from nnspec.runtime.cli.arguments import add_set_argument
from nnspec.runtime.lab import sweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file or zoo name that every run trains")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="an axis of the grid: a spec path and its values (repeat for more axes)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per grid point")
    parser.add_argument(
        "--parallel",
        type=int,
        help="runs at once (local: default 1, each pinned to one thread; ray: default as "
        "many as the cluster's CPUs allow)",
    )
    parser.add_argument("--out", required=True, type=Path, help="sweep directory")
    parser.add_argument("--epochs", type=int, help="passed to every `nnspec train`")
    parser.add_argument("--data", help="data source passed to every `nnspec train`")
    parser.add_argument(
        "--track",
        action="append",
        default=[],
        metavar="TRACKER[:TARGET]",
        help="passed to every `nnspec train` (mlflow[:URI], wandb[:PROJECT])",
    )
    add_set_argument(parser, help="an override shared by every run")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write sweep.json and print the train commands without running them",
    )
    ray = parser.add_argument_group("where the runs execute (the rest need --backend ray)")
    ray.add_argument(
        "--backend",
        choices=list(sweep.BACKENDS),
        default="local",
        help="local: nnspec train processes on this machine; ray: Ray Tune trials",
    )
    ray.add_argument(
        "--address",
        metavar="ADDR",
        help="a Ray cluster to run on (ray://HEAD:10001, or auto); default: a local instance",
    )
    ray.add_argument(
        "--scheduler", choices=["asha"], help="stop poor trials early with Ray Tune's ASHA"
    )
    ray.add_argument(
        "--metric", default="val_accuracy", help="the per-epoch metric ASHA compares"
    )
    ray.add_argument(
        "--mode", choices=["auto", "min", "max"], default="auto", help="auto: min for a loss"
    )
    ray.add_argument(
        "--grace-period",
        type=int,
        default=1,
        metavar="N",
        help="epochs before ASHA may stop a trial (default 1)",
    )
    ray.add_argument(
        "--cpus-per-trial", type=float, default=1.0, metavar="N", help="default 1"
    )
    ray.add_argument(
        "--gpus-per-trial", type=float, default=0.0, metavar="N", help="default 0; may be 0.5"
    )


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    if args.parallel is not None and args.parallel < 1:
        raise UsageError(f"--parallel must be at least 1, got {args.parallel}")
    from nnspec.runtime.train.tracking.session import parse_track

    parse_track(args.track)  # a misspelt tracker fails before any run starts
    settings = sweep.SweepSettings(
        spec=args.spec,
        epochs=args.epochs,
        data=args.data,
        overrides=list(args.overrides),
        track=list(args.track),
    )
    runs = sweep.plan_runs(sweep.grid_points(sweep.parse_grid(args.grid)), range(args.seeds))
    sweep.write_plan(args.out, settings, runs)
    if args.dry_run:
        for planned in runs:
            print(" ".join(sweep.train_command(settings, planned, args.out / planned.relative_dir)))
        return 0
    options = sweep.BackendOptions(
        parallel=args.parallel,
        address=args.address,
        scheduler=args.scheduler,
        metric=args.metric,
        mode=args.mode,
        grace_period=args.grace_period,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
    )
    outcomes = execute(args.backend, runs, settings, args.out, options)
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def execute(
    backend: str,
    runs: list[sweep.PlannedRun],
    settings: sweep.SweepSettings,
    out: Path,
    options: sweep.BackendOptions,
) -> list[sweep.RunOutcome]:
    """Run the sweep with progress lines, then write and print its results table."""
    total = len(runs)
    finished = 0
    lock = threading.Lock()  # outcomes arrive from the local backend's worker threads

    def report(outcome: sweep.RunOutcome) -> None:
        nonlocal finished
        with lock:
            finished += 1
            failed = outcome.status == "failed"
            detail = f" (exit {outcome.returncode}, see train.log)" if failed else ""
            took = f" in {outcome.seconds:.1f}s" if outcome.status in ("done", "stopped") else ""
            print(
                f"[{finished}/{total}] {outcome.run.relative_dir}: {outcome.status}{took}{detail}"
            )

    outcomes = sweep.execute_sweep(backend, runs, out, settings, options, on_outcome=report)
    rows = sweep.collect_rows(out, runs)
    summary = sweep.summarise(rows)
    sweep.write_results(out, rows, summary)
    print(sweep.format_summary(summary, ["test_accuracy", "test_loss", "last_train_loss"]))
    print(f"results: {out / 'results.csv'}, {out / 'results.json'}")
    return outcomes
