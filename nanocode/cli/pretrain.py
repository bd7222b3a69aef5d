"""Pretrain a base model: the experiment's `Pretraining` bindings, the tokenizer from the model tag's workspace.

Writes <tag>/pretrain/: config.gin, metrics.jsonl (loss, tokens/s, MFU, LR, memory; per-source validation bits
per byte), samples.jsonl and checkpoints/<step>/. SIGTERM or Ctrl-C saves a checkpoint and exits cleanly.
--resume continues from the latest complete checkpoint (or starts fresh if there is none); a checkpoint of another
config, tokenizer or data is refused in one line unless --force.

Example: nanocode pretrain --gin_file experiments/debug_cpu.gin --resume
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_config_arguments, load_config
from nanocode.core import config, distributed
from nanocode.core.workspace import Workspace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint if there is one")
    parser.add_argument(
        "--force", action="store_true", help="resume even if the checkpoint's config, tokenizer or data differ"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    load_config(args)
    config.build(distributed.initialize)  # first: every process joins before any device is touched
    from nanocode.train.pretrain import Pretraining

    experiment = config.build(Pretraining)
    workspace = config.build(Workspace)
    experiment.run(workspace, resume=args.resume, force=args.force, progress=not args.quiet)
    return 0
