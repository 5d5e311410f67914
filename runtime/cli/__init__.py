"""The ``nnspec`` command line: one table of subcommands, errors caught once.

Each subcommand lives in ``nnspec.runtime.cli.<module>`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only when their
command runs, so ``nnspec check`` never pays for onnxruntime or the server stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nnspec.compiler.errors import NnspecError

# name -> (module under nnspec.runtime.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("check", "validate specs (and optionally their ONNX export); exit 0 or 2"),
    "summary": ("summary", "per-layer shapes, parameters and MACs of a spec"),
    "compare": ("compare", "compare specs by parameters, MACs and depth"),
    "resolve": ("resolve", "print the fully expanded canonical spec"),
    "layers": ("layers", "list the layer kinds the registry knows"),
    "schema": ("schema", "print the JSON Schema of the spec format"),
    "import-weights": ("import_weights", "map a torchvision state_dict onto a spec's modules"),
    "train": ("train", "compile a spec and train it into a run directory"),
    "eval": ("eval", "evaluate a run directory on a data split"),
    "export": ("export", "export a run or spec to ONNX with inference semantics"),
    "predict": ("predict", "classify inputs with an exported ONNX model"),
    "serve": ("serve", "serve ONNX models over KServe v2 (Open Inference Protocol) REST and gRPC"),
    "lint": ("lint", "warn about training-practice problems in a spec"),
    "init-stats": ("init_stats", "activation and gradient statistics at initialisation"),
    "hessian": ("hessian", "top Hessian eigenvalues and trace of the training loss"),
    "sweep": ("sweep", "run a grid of overrides x seeds as training runs"),
    "experiments": ("experiments", "run the lecture's claims as experiments"),
    "report": ("report", "self-contained HTML report of runs or sweeps"),
    "graph": ("graph", "draw the network as Graphviz DOT/SVG"),
    "codegen": ("codegen", "generate standalone PyTorch source from a spec"),
    "new": ("new", "start a new spec from a family template"),
}


def _load_command(module: str):
    return importlib.import_module(f"nnspec.runtime.cli.{module}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnspec",
        description="Declarative model specs for PyTorch: check, train, export, serve.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the command being run needs its arguments (and its imports).
        if name == wanted:
            _load_command(module).add_arguments(p)
            p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.version:
        from nnspec.runtime.common.version import nnspec_version

        print(nnspec_version())
        return 0
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(_load_command(args._module).run(args) or 0)
    except NnspecError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # output piped into `head` and closed early
        return 0
    except OSError as error:  # a file the user named cannot be read or written
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
