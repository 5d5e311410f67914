"""`nnspec import-weights SPEC SOURCE -o WEIGHTS.safetensors`: a state_dict from torchvision,
timm or any PyTorch checkpoint, mapped onto a spec's module ids."""

from __future__ import annotations

import argparse

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnspec.runtime.train.weights import FAMILIES

    parser.add_argument("spec", help="spec (path or zoo name, e.g. resnet50)")
    parser.add_argument("source", help="weights: a torch file (.pth/.pt: a state_dict or a "
                                       "checkpoint holding one) or a .safetensors file")
    parser.add_argument("-o", "--output", required=True, help="safetensors file to write")
    parser.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        help="torchvision rename rules to try first (default: chosen by the spec's name; other "
             "specs match by name and structure)",
    )
    parser.add_argument("--exclude", action="append", default=[], metavar="REGEX",
                        help="leave out spec and source keys matching REGEX (re.search): those "
                             "spec tensors keep the spec's init, e.g. a new head; repeatable")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print the summary only, not the mapping table")
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.train.weights import import_weights

    spec = spec_from_args(args)
    result = import_weights(spec, args.source, args.output, family=args.family,
                            exclude=args.exclude)
    if not args.quiet:
        rows = [(p.target, p.source, p.how) for p in (*result.pairs, *result.recomputed)]
        rows += [(k, "-", "initialised") for k in result.excluded]
        width = max(len(r[0]) for r in rows)
        source_width = max(len(r[1]) for r in rows)
        print(f"{'spec tensor'.ljust(width)}  {'source tensor'.ljust(source_width)}  matched by")
        for target, source, how in rows:
            print(f"{target.ljust(width)}  {source.ljust(source_width)}  {how}")
    how = ", ".join(f"{n} by {k}" for k, n in result.counts.items())
    entry = f" (its {result.entry!r} entry)" if result.entry else ""
    rules = f" with the {result.family} rules" if result.family else ""
    print(f"wrote {result.path}: {result.tensors} tensors ({result.parameters:,} parameters) "
          f"mapped onto spec {spec.name!r} from {args.source}{entry}{rules}: {how}")
    if result.recomputed:
        print(f"{len(result.recomputed)} source buffers the spec recomputes were checked equal, "
              "not copied")
    if result.excluded:
        print(f"{len(result.excluded)} spec tensors excluded, initialised as the spec says")
    if result.initialised_heads:
        print(f"training-only heads not in the source, initialised as the spec says: "
              f"{', '.join(result.initialised_heads)} (they do not affect eval or export)")
    return 0
