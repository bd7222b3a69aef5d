"""Constitutional AI data: `scenarios` (teacher writes user requests), `rollouts` (rollout -> critique against the
SOUL -> revision -> preference pairs), `restyle` (existing SFT conversations -> pairs), and `tasks` (build the
experiment's own SFT and preference datasets — e.g. the offline execution-grounded repo tasks of the debug run,
whose rejected sides break one SOUL rule each), and `onpolicy` (a served model works repo tasks through the real
tools; each rollout that breaks a SOUL principle is paired, as rejected, with the task's scripted solution, under
<tag>/synth/onpolicy/). Resumable; counts printed.

Examples:
  nanocode synth onpolicy --gin_file experiments/debug_cpu.gin --url http://127.0.0.1:8000/v1 --count 16
  nanocode synth rollouts --gin_file experiments/synth_openai.gin --gin_param "openai_compatible.base_url='http://127.0.0.1:8000/v1'"
"""

from __future__ import annotations

import argparse
import json

from nanocode.align.synthesis import Synthesis
from nanocode.cli.common import add_config_arguments, load_config
from nanocode.core import config
from nanocode.core.workspace import Workspace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=["scenarios", "rollouts", "restyle", "tasks", "onpolicy"])
    add_config_arguments(parser)
    parser.add_argument("--input", help="rollouts: a scenarios JSONL ({id, prompt}); restyle: a conversations JSONL")
    onpolicy = parser.add_argument_group("onpolicy")
    onpolicy.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the policy's OpenAI-compatible endpoint")
    onpolicy.add_argument("--model", default="default", help="model name sent to the endpoint")
    onpolicy.add_argument("--count", type=int, default=16, help="repo tasks to run")
    onpolicy.add_argument("--seed", type=int, default=0, help="which repo tasks (RepoTasks seed)")
    onpolicy.add_argument("--kinds", nargs="*", default=None, help="task kinds (default: all)")
    onpolicy.add_argument("--max_steps", type=int, default=8, help="assistant messages per episode")
    onpolicy.add_argument("--max_tokens", type=int, default=512, help="tokens per assistant message")
    onpolicy.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (1: the policy's own distribution)"
    )
    onpolicy.add_argument("--workers", type=int, default=1, help="episodes in flight (the server batches them)")
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
    if args.step == "onpolicy":
        return run_onpolicy(args)
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


def run_onpolicy(args: argparse.Namespace) -> int:
    from nanocode.agents.onpolicy import onpolicy_pairs
    from nanocode.agents.served_policy import ServedPolicy
    from nanocode.align.teacher import OpenAICompatibleTeacher

    out = config.build(Workspace).run_dir("synth") / "onpolicy"
    config.write_config(out)
    client = OpenAICompatibleTeacher(base_url=args.url, model=args.model)
    policy = ServedPolicy(client, temperature=args.temperature, max_tokens=args.max_tokens)
    summary = onpolicy_pairs(
        policy, out, count=args.count, seed=args.seed, kinds=args.kinds, max_steps=args.max_steps,
        workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(f"synth: on-policy pairs in {out / 'pairs.jsonl'}")
    return 0
