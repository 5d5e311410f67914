"""One module per `nnspec` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
