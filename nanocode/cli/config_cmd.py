"""Print the resolved experiment without running anything: every stage built and validated, shown as one tree
(the shared model, mesh, data and system prompt first, then each stage's own settings). --gin prints the parsed gin
bindings instead (what every run writes as its config.gin).

Example: nanocode config --gin_file experiments/d24_tpu_v6e8.gin
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--gin", action="store_true", help="print the gin bindings instead of the tree")


def run(args: argparse.Namespace) -> int:
    from nanocode.cli.experiment import describe
    from nanocode.core import config

    experiment = load_experiment(args)
    print(config.config_str() if args.gin else describe(experiment), end="")
    return 0
