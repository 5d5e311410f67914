"""`nnspec import-weights SPEC TV_STATE_DICT.pth -o WEIGHTS.safetensors`."""

from __future__ import annotations

import argparse

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from nnspec.runtime.train.weights import FAMILIES

    parser.add_argument("spec", help="zoo spec (path or name, e.g. resnet50)")
    parser.add_argument("state_dict", help="torchvision state_dict saved with torch.save (.pth)")
    parser.add_argument("-o", "--output", required=True, help="safetensors file to write")
    parser.add_argument(
        "--family",
        choices=sorted(FAMILIES),
        help="mapping rules to use (default: chosen by the spec's name)",
    )
    add_spec_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.train.weights import import_torchvision_weights

    spec = spec_from_args(args)
    result = import_torchvision_weights(spec, args.state_dict, args.output, family=args.family)
    print(
        f"wrote {result.path}: {result.tensors} tensors ({result.parameters:,} parameters) "
        f"mapped onto spec {spec.name!r} with the {result.family} rules"
    )
    if result.initialised_heads:
        print(f"training-only heads not in the source, initialised as the spec says: "
              f"{', '.join(result.initialised_heads)} (they do not affect eval or export)")
    return 0
