"""`nnspec compare SPEC...`: params, MACs and depth side by side (torchvision's beside, if known).

With no SPEC it compares the lecture's line: AlexNet -> VGG16 -> GoogLeNet -> ResNet -> ViT.
"""

from __future__ import annotations

import argparse
import json

from nnspec.runtime.cli.arguments import add_spec_arguments, spec_from_args

LECTURE_LINE = ("alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "resnet152", "vit_b_16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="*", metavar="SPEC",
                        help="spec files or zoo names (default: the lecture's zoo line)")
    parser.add_argument("--json", action="store_true", help="print a JSON list")
    add_spec_arguments(parser)


def _reference(name: str):
    try:
        from nnspec.runtime.lab.zoo_reference import torchvision_figures
    except ImportError:
        return None
    return torchvision_figures(name)


def compare_rows(sources: list[str], args: argparse.Namespace) -> list[dict]:
    from nnspec.compiler import compile_graph
    from nnspec.compiler.summary import summarize

    rows = []
    for source in sources:
        summary = summarize(compile_graph(spec_from_args(args, source)))
        row = {"name": summary["name"], "params": summary["params"], "macs": summary["macs"],
               "depth": summary["depth"],
               "head_params": sum(h["params"] for h in summary["heads"].values())}
        ref = _reference(summary["name"])
        if ref is not None:
            row["torchvision_params"] = ref.params
            row["torchvision_gmacs"] = ref.gmacs
            row["torchvision_acc1"] = ref.acc1
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler.summary import format_count

    rows = compare_rows(args.specs or list(LECTURE_LINE), args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("model", "params", "MACs", "depth", "tv params", "tv GMACs", "tv acc@1")
    table = [header]
    for r in rows:
        table.append((
            r["name"], f"{r['params']:,}", format_count(r["macs"]), str(r["depth"]),
            f"{r['torchvision_params']:,}" if "torchvision_params" in r else "-",
            f"{r['torchvision_gmacs']:.2f}" if "torchvision_gmacs" in r else "-",
            f"{r['torchvision_acc1']:.2f}" if r.get("torchvision_acc1") else "-",
        ))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                        for j, (c, w) in enumerate(zip(row, widths, strict=True))))
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print("depth = weighted layers (conv, linear, attention, ...) on the longest path; "
          "MACs per sample; tv = torchvision's published figures for its default weights")
    return 0
