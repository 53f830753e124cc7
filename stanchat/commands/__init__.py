"""One module per `stanchat` subcommand: `add_arguments(parser)` and `run(args) -> int`.

Keep module-level imports light (argparse, pathlib): heavy imports go inside `run`.
"""
