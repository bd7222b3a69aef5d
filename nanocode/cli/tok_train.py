"""Train the BPE tokenizer on the experiment's data mixture and save it into the model tag's tokenizer directory.

Example: nanocode tok-train --gin_file experiments/base/data/debug.gin --gin_file experiments/base/tokenizer/debug.gin
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_config
from nanocode.core import config
from nanocode.core.workspace import Workspace
from nanocode.data.tokenizer_training import TokenizerTraining


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--prepare", action="store_true", help="first make the mixture's shards exist (build embedded ones, download)"
    )


def run(args: argparse.Namespace) -> int:
    load_config(args)
    workspace = config.build(Workspace)
    experiment = config.build(TokenizerTraining)
    if args.prepare:
        for source in experiment.mixture.sources.values():
            source.prepare(progress=not args.quiet)
    experiment.run(workspace, progress=not args.quiet)
    path = config.write_config(workspace.tokenizer_dir)
    print(f"tok-train: config -> {path}")
    return 0
