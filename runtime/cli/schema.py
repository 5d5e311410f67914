"""`nnspec schema`: JSON Schema of the spec format (for yaml-language-server and editors)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    parser.add_argument("--plugin", dest="plugins", action="append", default=[],
                        metavar="MODULE", help="include layer kinds a plugin registers")


def run(args: argparse.Namespace) -> int:
    from nnspec.compiler import load_plugins
    from nnspec.compiler.json_schema import spec_json_schema

    load_plugins(args.plugins)
    text = json.dumps(spec_json_schema(), indent=2)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0
