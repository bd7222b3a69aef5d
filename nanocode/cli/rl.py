"""Reinforcement learning from execution rewards: the aligned model samples whole agentic episodes on training repo
tasks (the real tools, in sandboxes), each rewarded by its task's hidden check, and is trained on its own tokens with
group-relative advantages (`RLTraining.objective = @grpo()`, or a plugin's `rl_objective`); the experiment's `rl`
stage.

Starts from the latest checkpoint of <tag>/align (RLTraining.init_from, or RLTraining.init_checkpoint), which is
also the frozen reference of a KL penalty (grpo.kl_coef > 0). Writes <tag>/rl/: config.gin, metrics.jsonl (reward,
success, mean_steps, entropy, kl, how episodes ended, ...), samples.jsonl (one episode per task) and
checkpoints/<step>/. SIGTERM or Ctrl-C saves a checkpoint and exits cleanly; --resume continues from the latest
complete one, with the tasks and seeds the run would have drawn next.

Example: nanocode rl --gin_file experiments/debug_cpu.gin --resume
"""

from __future__ import annotations

import argparse

from nanocode.cli.common import add_training_arguments, run_training


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return run_training(args, "rl")
