"""Print the resolved gin config of an experiment (every file, include and binding) without running anything."""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_config
from nanocode.core import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    load_config(args)
    print(config.config_str(), end="")
    return 0
