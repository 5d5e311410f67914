"""`nnspec init-stats SPEC [--json] [--plot out.png]`: activation/gradient spread at init."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="spec file, zoo name, or a run directory (its spec)")
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
    from nnspec.runtime.lab.report import INIT_STATS_FILE

    if args.batch < 2:
        raise UsageError(f"--batch must be at least 2 (a std needs two samples), got {args.batch}")
    run_dir = Path(args.spec) if (Path(args.spec) / "spec.yaml").is_file() else None
    spec = spec_from_args(args, run_dir / "spec.yaml" if run_dir else None)
    save = args.save or (run_dir / INIT_STATS_FILE if run_dir else None)
    if args.plot or save:
        series = init_stats.compare_inits(spec, args.batch, args.seed)
    else:
        series = {"spec init": init_stats.spec_statistics(spec, args.batch, args.seed)}
    data = {
        "spec": spec.name,
        "batch": args.batch,
        "series": {name: [s.to_dict() for s in stats] for name, stats in series.items()},
    }
    if save:
        save.write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        init_stats.plot_std_by_depth(series, str(args.plot))
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(init_stats.format_table(series["spec init"]))
    for path in (args.plot, save):
        if path:
            print(f"wrote {path}")
    return 0
