"""Flags every experiment-driven command shares, and the one way they are turned into a parsed config."""

from __future__ import annotations

import argparse

from nanocode import registry
from nanocode.core import config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gin_file",
        action="append",
        default=[],
        metavar="FILE",
        help="gin experiment file (repeatable; later files override earlier ones)",
    )
    parser.add_argument(
        "--gin_param",
        action="append",
        default=[],
        metavar="BINDING",
        help="a gin binding such as 'Workspace.tag = \"d12\"' (repeatable; applied after the files)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers components before parsing (repeatable)",
    )


def load_config(args: argparse.Namespace) -> None:
    """Built-ins, then plugins, then gin files and bindings. Raises ConfigError (one line) on any problem."""
    registry.load_builtins()
    config.parse(args.gin_file, args.gin_param, args.plugin)
