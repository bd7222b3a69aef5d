"""Train the BPE tokenizer on the experiment's data mixture and save it into the model tag's tokenizer directory.

The experiment's `tokenizer_training` stage: its size and sample; the vocabulary is the model's, the mixture the
experiment's data.

Example: nanocode tok-train --gin_file experiments/debug_cpu.gin --prepare
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.core import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--prepare", action="store_true", help="first make the mixture's shards exist (build embedded ones, download)"
    )


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args)
    workspace, stage = experiment.workspace, experiment.stage("tokenizer_training")
    if args.prepare:
        for source in stage.mixture.sources.values():
            source.prepare(progress=not args.quiet)
    stage.run(workspace, progress=not args.quiet)
    path = config.write_config(workspace.tokenizer_dir)
    print(f"tok-train: config -> {path}")
    return 0
