"""Evaluate a checkpoint with every suite: CORE, HumanEval pass@k, the agentic tasks and the tool-call validity rate.

The experiment's `eval` stage (experiments/base/eval/*.gin) says which suites and how big; the flags below override
it. The model and the system prompt are the experiment's, the checkpoint the stage's latest (by default the last of
align, sft, pretrain that has one). Writes <tag>/eval/results.json (every number with its
definition and source; a suite that cannot run, e.g. CORE without its bundle and no network, records why and the
others still run) and one JSONL log per suite beside it.

Example: nanocode eval --gin_file experiments/debug_cpu.gin --suite humaneval --stage sft
"""

from __future__ import annotations

import argparse
import dataclasses

from nanocode.cli.common import add_config_arguments, load_experiment

SUITE_CHOICES = ("core", "humaneval", "agentic", "tool_calls", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument(
        "--suite", action="append", choices=SUITE_CHOICES, help="suite to run (repeatable; default: Evaluation.suites)"
    )
    parser.add_argument("--stage", choices=("pretrain", "sft", "align", "rl", "latest"), help="whose checkpoint")
    parser.add_argument("--checkpoint", metavar="DIR", help="a checkpoints directory or one step in it")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest complete one)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from nanocode.core import config
    from nanocode.core.errors import ConfigError
    from nanocode.evals.run import SUITES

    root = load_experiment(args)
    experiment = root.stage("eval")
    overrides = {}
    if args.suite:
        overrides["suites"] = SUITES if "all" in args.suite else tuple(dict.fromkeys(args.suite))
    for flag in ("stage", "checkpoint", "step"):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    try:
        experiment = dataclasses.replace(experiment, **overrides)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    workspace = root.workspace
    results = experiment.run(workspace, progress=not args.quiet)
    config.write_config(workspace.run_dir("eval"))
    print(workspace.run_dir("eval") / "results.json")
    failed = [s for s in experiment.suites if results["suites"][s]["status"] != "ok"]
    if failed:
        print(f"nanocode eval: not evaluated: {', '.join(failed)} (reasons in results.json)")
    return 0
