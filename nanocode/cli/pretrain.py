"""Pretrain a base model: the experiment's `pretraining` stage, the tokenizer from the model tag's workspace.

Writes <tag>/pretrain/: config.gin, metrics.jsonl (loss, tokens/s, MFU, LR, memory; per-source validation bits
per byte), samples.jsonl and checkpoints/<step>/. SIGTERM or Ctrl-C saves a checkpoint and exits cleanly.
--resume continues from the latest complete checkpoint (or starts fresh if there is none); a checkpoint of another
config, tokenizer or data is refused in one line unless --force.

Example: nanocode pretrain --gin_file experiments/debug_cpu.gin --resume
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_training_arguments, run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_training(args, "pretraining")
