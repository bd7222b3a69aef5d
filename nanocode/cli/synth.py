"""Constitutional AI data: `scenarios` (teacher writes user requests), `rollouts` (rollout -> critique against the
SOUL -> revision -> preference pairs), `restyle` (existing SFT conversations -> pairs), and `tasks` (build the
experiment's own SFT and preference datasets — e.g. the offline execution-grounded repo tasks of the debug run,
whose rejected sides break one SOUL rule each), and `onpolicy` (a served model works repo tasks through the real
tools; each rollout that breaks a SOUL principle is paired, as rejected, with the task's scripted solution, under
<tag>/synth/onpolicy/). Resumable (a run killed at any point redoes nothing done and loses nothing); counts printed.
The teacher is any OpenAI-compatible server, through the official client (pip install 'nanocode[teacher]').

Examples:
  nanocode synth onpolicy --gin_file experiments/debug_cpu.gin --url http://127.0.0.1:8000/v1 --count 16
  nanocode synth tasks --gin_file experiments/d24_tpu_v6e8.gin        # download nanocode's SFT and preference sets
  nanocode synth scenarios --gin_file experiments/d24_tpu_v6e8.gin \
      --gin_param "openai_compatible.base_url='http://127.0.0.1:8000/v1'"   # the experiment's `synth` stage
  OPENAI_API_KEY=... nanocode synth rollouts --gin_file experiments/d12_gpu.gin \
      --gin_param "openai_compatible.base_url='https://api.openai.com/v1'" \
      --gin_param "openai_compatible.model='gpt-5-mini'" --gin_param "openai_compatible.api='responses'"
"""

from __future__ import annotations

import argparse
import json

from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.core import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("step", choices=["scenarios", "rollouts", "restyle", "tasks", "onpolicy"])
    add_config_arguments(parser)
    parser.add_argument("--input", help="rollouts: a scenarios JSONL ({id, prompt}); restyle: a conversations JSONL")
    onpolicy = parser.add_argument_group("onpolicy")
    onpolicy.add_argument("--url", default="http://127.0.0.1:8000/v1", help="the policy's OpenAI-compatible endpoint")
    onpolicy.add_argument("--model", help="model name sent to the endpoint (default: the one it serves)")
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


def prepare_experiment_datasets(experiment) -> int:
    """`prepare()` every dataset the experiment's SFT and alignment stages read (builds or downloads them), once."""
    datasets = []
    if experiment.sft is not None:
        datasets += experiment.sft.datasets
    if experiment.align is not None:
        datasets += [*experiment.align.datasets, *experiment.align.sft_datasets]
    ready = []
    for d in datasets:
        if any(d is r for r in ready):  # the same object bound in two places
            continue
        d.prepare()
        ready.append(d)
        where = getattr(d, "directory", None)  # sets built in memory (copy drill conversations) have none
        print(f"synth: {type(d).__name__} ready" + (f" ({where})" if where else ""))
    return len(ready)


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args)
    if args.step == "tasks":
        prepare_experiment_datasets(experiment)
        return 0
    if args.step == "onpolicy":
        return run_onpolicy(args, experiment.workspace)
    workspace, synthesis = experiment.workspace, experiment.stage("synth")
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


def served_model(url: str) -> str:
    """The id of the one model an endpoint serves (GET /models), so `--model` is needed only where it serves many."""
    import os
    import urllib.request

    from nanocode.core.errors import ConfigError

    request = urllib.request.Request(f"{url.rstrip('/')}/models")
    key = os.environ.get("OPENAI_API_KEY")  # the key the client sends (a `nanocode serve --api-key` one, say)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            ids = [m["id"] for m in json.load(reply)["data"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{url}/models: cannot list the served models ({e}); pass --model NAME") from None
    if len(ids) != 1:
        raise ConfigError(f"{url} serves {len(ids)} models ({', '.join(ids)}): pass --model NAME")
    return ids[0]


def run_onpolicy(args: argparse.Namespace, workspace) -> int:
    from nanocode.agents.onpolicy import onpolicy_pairs
    from nanocode.agents.served_policy import ServedPolicy
    from nanocode.align.teacher import OpenAICompatibleTeacher

    out = workspace.run_dir("synth") / "onpolicy"
    config.write_config(out)
    client = OpenAICompatibleTeacher(base_url=args.url, model=args.model or served_model(args.url))
    policy = ServedPolicy(client, temperature=args.temperature, max_tokens=args.max_tokens)
    summary = onpolicy_pairs(
        policy, out, count=args.count, seed=args.seed, kinds=args.kinds, max_steps=args.max_steps,
        workers=args.workers, progress=not args.quiet,
    )  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(f"synth: on-policy pairs in {out / 'pairs.jsonl'}")
    return 0
