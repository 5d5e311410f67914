"""`nnspec sweep SPEC --grid key=v1,v2 [--seeds N] [--parallel N] --out DIR`."""

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
        "--parallel", type=int, default=1, help="runs at once (each pinned to one thread)"
    )
    parser.add_argument("--out", required=True, type=Path, help="sweep directory")
    parser.add_argument("--epochs", type=int, help="passed to every `nnspec train`")
    parser.add_argument("--data", help="data source passed to every `nnspec train`")
    add_set_argument(parser, help="an override shared by every run")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write sweep.json and print the train commands without running them",
    )


def run(args: argparse.Namespace) -> int:
    if args.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {args.seeds}")
    extra = [a for override in args.overrides for a in ("--set", override)]
    settings = sweep.SweepSettings(
        spec=args.spec, epochs=args.epochs, data=args.data, extra_args=extra
    )
    runs = sweep.plan_runs(sweep.grid_points(sweep.parse_grid(args.grid)), range(args.seeds))
    sweep.write_plan(args.out, settings, runs)
    if args.dry_run:
        for planned in runs:
            print(" ".join(sweep.train_command(settings, planned, args.out / planned.relative_dir)))
        return 0
    outcomes = execute(runs, settings, args.out, args.parallel)
    return 0 if all(o.status != "failed" for o in outcomes) else 1


def execute(
    runs: list[sweep.PlannedRun], settings: sweep.SweepSettings, out: Path, parallel: int
) -> list[sweep.RunOutcome]:
    """Run the sweep with progress lines, then write and print its results table."""
    total = len(runs)
    finished = 0
    lock = threading.Lock()  # outcomes arrive from the worker threads

    def report(outcome: sweep.RunOutcome) -> None:
        nonlocal finished
        with lock:
            finished += 1
            failed = outcome.status == "failed"
            detail = f" (exit {outcome.returncode}, see train.log)" if failed else ""
            took = f" in {outcome.seconds:.1f}s" if outcome.status == "done" else ""
            print(
                f"[{finished}/{total}] {outcome.run.relative_dir}: {outcome.status}{took}{detail}"
            )

    runner = sweep.subprocess_runner(settings, single_thread=parallel > 1)
    outcomes = sweep.run_sweep(runs, out, runner, parallel, on_outcome=report)
    rows = sweep.collect_rows(out, runs)
    summary = sweep.summarise(rows)
    sweep.write_results(out, rows, summary)
    print(sweep.format_summary(summary, ["test_accuracy", "test_loss", "last_train_loss"]))
    print(f"results: {out / 'results.csv'}, {out / 'results.json'}")
    return outcomes
