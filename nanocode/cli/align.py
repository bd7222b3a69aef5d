"""Preference optimisation: train the SFT model on preference data with an objective chosen by name in gin
(`Alignment.objective = @ipo()`, @dpo(), @kto(), ... or a plugin's), the experiment's `align` stage.

Starts from the latest checkpoint of <tag>/sft (or Alignment.init_checkpoint), which is also the frozen reference.
Writes <tag>/align/: config.gin, metrics.jsonl (loss, rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracy; held-out preference metrics and validation bits per byte), samples.jsonl and checkpoints/<step>/.
SIGTERM or Ctrl-C saves a checkpoint and exits cleanly; --resume continues from the latest complete one.

Example: nanocode align --gin_file experiments/debug_cpu.gin --plugin my_objectives --gin_param 'Alignment.objective = @my_loss()'
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_training_arguments, run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_training(args, "align")
