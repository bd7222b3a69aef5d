"""Agentic SFT: fine-tune the pretrained model on tool-call conversations (the experiment's `sft` stage).

Starts from the latest checkpoint of <tag>/pretrain (or SFTTraining.init_checkpoint). Writes <tag>/sft/: config.gin,
metrics.jsonl (loss, tokens/s, MFU, LR; validation bits per byte of held-out conversations and the tool-call
validity rate of greedy replies to held-out prompts), samples.jsonl and checkpoints/<step>/. SIGTERM or Ctrl-C
saves a checkpoint and exits cleanly; --resume continues from the latest complete one.

Example: nanocode sft --gin_file experiments/debug_cpu.gin --resume
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_training_arguments, run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_training(args, "sft")
