"""Write the run report (`<tag>/report/report.md`, plots, and report.html when pandoc is installed): the
experiment's `report` stage, from what the other stages wrote."""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args)
    path = experiment.stage("report").run(experiment.workspace)
    print(f"report: {path}")
    return 0
