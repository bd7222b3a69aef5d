"""Constitutional AI data: `scenarios` (teacher writes user requests), `rollouts` (rollout -> critique against the
SOUL -> revision -> preference pairs), `restyle` (existing SFT conversations -> pairs), and `tasks` (build the
experiment's own SFT and preference datasets — e.g. the offline execution-grounded repo tasks of the debug run,
whose rejected sides break one SOUL rule each). Resumable; counts printed.

Example: nanocode synth rollouts --gin_file experiments/synth_openai.gin --gin_param "openai_compatible.base_url='http://127.0.0.1:8000/v1'"
"""

from __future__ import annotations

import argparse
import json

from nanocode.align.synthesis import Synthesis
from nanocode.cli.common import add_config_arguments, load_config
from nanocode.core import config
from nanocode.core.workspace import Workspace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=["scenarios", "rollouts", "restyle", "tasks"])
    add_config_arguments(parser)
    parser.add_argument("--input", help="rollouts: a scenarios JSONL ({id, prompt}); restyle: a conversations JSONL")
    parser.add_argument("--quiet", action="store_true")


def prepare_experiment_datasets() -> int:
    """`prepare()` every dataset the SFT and alignment stages of the experiment read (builds or downloads them)."""
    from nanocode.train.align import Alignment  # only this step needs the trainers' configs

    alignment = config.build(Alignment)
    datasets = [*alignment.datasets, *alignment.sft_datasets]
    for d in datasets:
        d.prepare()
        print(f"synth: {type(d).__name__} ready ({getattr(d, 'directory', '')})")
    return len(datasets)


def run(args: argparse.Namespace) -> int:
    load_config(args)
    if args.step == "tasks":
        prepare_experiment_datasets()
        return 0
    workspace, synthesis = config.build(Workspace), config.build(Synthesis)
    out = synthesis.out_dir(workspace)
    config.write_config(out)
    if args.step == "scenarios":
        print(f"synth: {len(synthesis.scenarios(workspace, progress=not args.quiet))} scenarios in {out}")
    elif args.step == "rollouts":
        print(json.dumps(synthesis.rollouts(workspace, args.input, progress=not args.quiet), indent=2))
    else:
        if not args.input:
            raise SystemExit("nanocode synth restyle: --input CONVERSATIONS.jsonl is required")
        print(json.dumps(synthesis.restyle(workspace, args.input, progress=not args.quiet), indent=2))
    return 0
