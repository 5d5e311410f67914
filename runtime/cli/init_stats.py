"""`nnspec init-stats SPEC [--json] [--plot out.png]`: activation/gradient spread at init.

SPEC may be a spec, a run directory, or an experiment file: then each of its variants (the
inits `specs/experiments/init_deep_relu.yaml` compares) is measured and plotted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file, zoo name, run directory (its spec), or an "
                                     "experiment file (each of its variants)")
    parser.add_argument(
        "--batch", type=int, default=64, help="standard normal batch size (64: fits ImageNet nets)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="OUT.png",
        help="plot std per depth for the spec's init and Kaiming / Xavier / N(0, 0.01)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        metavar="OUT.json",
        help="write every init's statistics (default for a run: RUN_DIR/init_stats.json)",
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler.errors import UsageError
    from nnspec.runtime.lab import init_stats
    from nnspec.runtime.lab.experiments import is_experiment_file, load_experiment, variant_specs
    from nnspec.runtime.lab.report import INIT_STATS_FILE

    if args.batch < 2:
        raise UsageError(f"--batch must be at least 2 (a std needs two samples), got {args.batch}")
    run_dir = Path(args.spec) if (Path(args.spec) / "spec.yaml").is_file() else None
    save = args.save or (run_dir / INIT_STATS_FILE if run_dir else None)
    if is_experiment_file(args.spec):
        # An experiment's variants are what it compares (e.g. Kaiming vs Xavier init)
        experiment = load_experiment(Path(args.spec))
        specs = variant_specs(experiment, args.overrides)
        name = experiment.name
        series = {label: init_stats.spec_statistics(spec, args.batch, args.seed)
                  for label, spec in specs.items()}
        shown = list(series)
    else:
        spec = spec_from_args(args, run_dir / "spec.yaml" if run_dir else None)
        name = spec.name
        if args.plot or save:
            series = init_stats.compare_inits(spec, args.batch, args.seed)
        else:
            series = {"spec init": init_stats.spec_statistics(spec, args.batch, args.seed)}
        shown = ["spec init"]
    data = {
        "spec": name,
        "batch": args.batch,
        "series": {label: [s.to_dict() for s in stats] for label, stats in series.items()},
    }
    if save:
        save.write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        init_stats.plot_std_by_depth(series, str(args.plot))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for label in shown:
        if len(shown) > 1:
            print(f"== {label}")
        print(init_stats.format_table(series[label]))
    for path in (args.plot, save):
        if path:
            print(f"wrote {path}")
    return 0
