"""Write the run report (`<tag>/report/report.md`, plots, and report.html when pandoc is installed)."""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_config
from nanocode.core import config
from nanocode.core.workspace import Workspace
from nanocode.evals.report import build_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    load_config(args)
    path = build_report(config.build(Workspace))
    print(f"report: {path}")
    return 0
