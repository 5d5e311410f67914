"""`nnspec experiments list|run [NAME...]|table`: the lecture's claims, measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "run", "table"])
    parser.add_argument("names", nargs="*", metavar="NAME", help="experiments (default: all)")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/experiments"), help="one sub-directory each"
    )
    parser.add_argument("--parallel", type=int, default=1, help="training runs at once")
    parser.add_argument("--epochs", type=int, help="override every experiment's epochs")
    parser.add_argument("--seeds", type=int, help="override every experiment's seed count")
    parser.add_argument(
        "--dir", type=Path, help="directory of experiment files (default: the bundled ones)"
    )


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler.errors import UsageError
    from nnspec.runtime.lab import experiments, verdicts
    from nnspec.runtime.lab.experiment_metrics import DERIVED_PREFIXES

    directory = args.dir or experiments.EXPERIMENTS_DIR
    paths = experiments.select_experiments(args.names, directory)
    loaded = [experiments.load_experiment(p) for p in paths]
    if args.action == "list":
        for experiment in loaded:
            print(f"{experiment.name}: {' '.join(experiment.claim.split())}")
        return 0
    if args.action == "table":
        outcomes = []
        for experiment in loaded:
            path = args.out / experiment.name / experiments.OUTCOME_FILE
            if not path.is_file():
                raise UsageError(f"{experiment.name} has no outcome in {args.out}; run it first")
            outcome = json.loads(path.read_text())
            # stored summaries are re-judged by the current rule and expectations
            outcome["verdicts"] = experiments.verdict(experiment, outcome["summary"])
            outcomes.append(outcome)
        metrics = ["test_accuracy", "last_train_loss", "params"]
        metrics += sorted({k for o in outcomes for e in o["summary"] for k in e
                           if k.startswith(DERIVED_PREFIXES)})  # fmt: skip
        print(experiments.markdown_table(outcomes, metrics), end="")
        return 0
    updates = {k: v for k, v in (("epochs", args.epochs), ("seeds", args.seeds)) if v}
    for experiment in loaded:
        experiment = experiment.model_copy(update=updates)
        print(f"== {experiment.name}: {' '.join(experiment.claim.split())}")
        outcome = experiments.run_experiment(
            experiment,
            args.out / experiment.name,
            args.parallel,
            on_outcome=lambda o: print(f"   {o.run.relative_dir}: {o.status}", flush=True),
        )
        for item in outcome["verdicts"]:
            print(f"   {verdicts.describe(item)}")
    return 0
