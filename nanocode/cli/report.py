"""Write the run report (`<tag>/report/report.md`, plots, and report.html when pandoc is installed): the
experiment's `report` stage, from what the other stages wrote."""

from __future__ import annotations

import argparse
import sys

from nanocode.cli.common import add_config_arguments, load_experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args)
    workspace = experiment.workspace
    outputs = [*workspace.model_dir.glob("*/metrics.jsonl"), workspace.run_dir("eval") / "results.json"]
    if not any(p.is_file() for p in outputs):
        print(
            f"report: warning: {workspace.model_dir} holds no stage's metrics or eval results yet (run the stages "
            "first); the report has the hardware section only",
            file=sys.stderr,
        )
    path = experiment.stage("report").run(workspace)
    print(f"report: {path}")
    return 0
