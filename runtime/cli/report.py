"""`nnspec report RUN_OR_SWEEP_DIR... -o report.html`: one self-contained HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", type=Path, metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument("-o", "--output", type=Path, default=Path("report.html"))
    parser.add_argument("--title", default="nnspec report")


def run(args: argparse.Namespace) -> int:
    from nnspec.runtime.lab.report import build_report

    html = build_report(args.dirs, args.title)
    args.output.write_text(html, encoding="utf-8")
    print(f"wrote {args.output} ({len(html) // 1024} KiB)")
    return 0
