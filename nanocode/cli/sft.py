"""Agentic SFT: fine-tune the pretrained model on tool-call conversations (the experiment's `SFTTraining` bindings).

Starts from the latest checkpoint of <tag>/pretrain (or SFTTraining.init_checkpoint). Writes <tag>/sft/: config.gin,
metrics.jsonl (loss, tokens/s, MFU, LR; validation bits per byte of held-out conversations and the tool-call
validity rate of greedy replies to held-out prompts), samples.jsonl and checkpoints/<step>/. SIGTERM or Ctrl-C
saves a checkpoint and exits cleanly; --resume continues from the latest complete one.

Example: nanocode sft --gin_file experiments/debug_cpu.gin --resume
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
    from nanocode.train.sft import SFTTraining

    experiment = config.build(SFTTraining)
    workspace = config.build(Workspace)
    experiment.run(workspace, resume=args.resume, force=args.force, progress=not args.quiet)
    return 0
