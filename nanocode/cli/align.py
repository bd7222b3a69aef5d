"""Preference optimisation: train the SFT model on preference data with an objective chosen by name in gin
(`Alignment.objective = @ipo()`, @dpo(), @kto(), ... or a plugin's), the experiment's `Alignment` bindings.

Starts from the latest checkpoint of <tag>/sft (or Alignment.init_checkpoint), which is also the frozen reference.
Writes <tag>/align/: config.gin, metrics.jsonl (loss, rewards/chosen, rewards/rejected, rewards/margins,
rewards/accuracy; held-out preference metrics and validation bits per byte), samples.jsonl and checkpoints/<step>/.
SIGTERM or Ctrl-C saves a checkpoint and exits cleanly; --resume continues from the latest complete one.

Example: nanocode align --gin_file experiments/debug_cpu.gin --plugin my_objectives --gin_param 'Alignment.objective = @my_loss()'
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
    from nanocode.train.align import Alignment

    experiment = config.build(Alignment)
    workspace = config.build(Workspace)
    experiment.run(workspace, resume=args.resume, force=args.force, progress=not args.quiet)
    return 0
