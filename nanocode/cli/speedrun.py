"""Run every stage of an experiment in order: tokenizer -> pretrain -> synth -> sft -> align -> rl -> eval -> report.
Each stage is skipped when its completion marker exists, and resumes from its own checkpoints when it was interrupted.

One gin experiment file drives every stage: the experiment is built (every stage validated) before the first stage
starts, and each stage command takes its part of it. A stage the experiment leaves out (`Experiment.<field> = None`)
is skipped and said so.
A stage is complete only when its command returned 0; the marker `<tag>/speedrun/<stage>.json` (written atomically
afterwards, with the stage's wall time) is what a re-run trusts, so a kill at any point redoes at most the stage
that was running, which itself resumes (pretraining from its latest checkpoint).

Example: nanocode speedrun --gin_file experiments/debug_cpu.gin
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nanocode.cli.common import add_config_arguments, load_experiment
from nanocode.cli.main import run_command
from nanocode.core.errors import NanocodeError
from nanocode.core.io import write_json
from nanocode.core.workspace import Workspace


@dataclass(frozen=True)
class Stage:
    name: str
    command: str  # the nanocode subcommand that does the work
    needs: tuple[str, ...]  # the Experiment fields it runs on (skipped when all of them are None)
    extra_args: tuple[str, ...] = field(default=())

    def in_experiment(self, experiment) -> bool:
        return any(getattr(experiment, f) is not None for f in self.needs)


# The pipeline. `synth` makes the SFT and preference data ready (built offline or downloaded; a teacher's own
# synthesis runs by hand: `nanocode synth scenarios/rollouts`).
STAGES: tuple[Stage, ...] = (
    Stage("tokenizer", "tok-train", ("tokenizer_training",), ("--prepare",)),
    Stage("tokenizer-eval", "tok-eval", ("tokenizer_training",)),
    Stage("pretrain", "pretrain", ("pretraining",), ("--resume",)),
    Stage("synth", "synth", ("sft", "align"), ("tasks",)),
    Stage("sft", "sft", ("sft",), ("--resume",)),
    Stage("align", "align", ("align",), ("--resume",)),
    Stage("rl", "rl", ("rl",), ("--resume",)),
    Stage("eval", "eval", ("eval",)),
    Stage("report", "report", ("report",)),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--only", action="append", default=[], metavar="STAGE", help="run only these stages")
    parser.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="STAGE",
        help="run these stages even if complete (their outputs are overwritten or resumed)",
    )
    parser.add_argument("--list", action="store_true", help="list the stages and whether each is complete")


def marker(workspace: Workspace, stage: Stage) -> Path:
    return workspace.model_dir / "speedrun" / f"{stage.name}.json"


def gin_argv(args: argparse.Namespace) -> list[str]:
    argv = [f"--gin_file={f}" for f in args.gin_file]
    argv += [f"--gin_param={p}" for p in args.gin_param]
    return argv + [f"--plugin={p}" for p in args.plugin]


def run(args: argparse.Namespace) -> int:
    experiment = load_experiment(args)  # every stage validated before the first one starts
    workspace = experiment.workspace
    unknown = set(args.only + args.redo) - {s.name for s in STAGES}
    if unknown:
        raise NanocodeError(
            f"unknown stage(s) {', '.join(sorted(unknown))} (stages: {', '.join(s.name for s in STAGES)})"
        )
    chosen = [s for s in STAGES if not args.only or s.name in args.only]
    stages = [s for s in chosen if s.in_experiment(experiment)]
    for s in chosen:
        if s not in stages:
            print(
                f"[speedrun] {s.name}: not in this experiment (Experiment.{' / '.join(s.needs)} = None)",
                file=sys.stderr,
            )
    if args.list:
        for s in stages:
            print(f"{s.name:<16} {'done' if marker(workspace, s).exists() else 'todo'}")
        return 0
    started = time.monotonic()
    for i, stage in enumerate(stages, start=1):
        done = marker(workspace, stage)
        head = f"[speedrun {i}/{len(stages)}] {stage.name}"
        if done.exists() and stage.name not in args.redo:
            print(f"{head}: complete, skipped ({done})", file=sys.stderr)
            continue
        print(f"{head}: nanocode {stage.command} {' '.join(stage.extra_args)}", file=sys.stderr)
        t0 = time.monotonic()
        try:
            code = run_command(stage.command, [*gin_argv(args), *stage.extra_args])
        except NanocodeError as e:
            raise NanocodeError(f"stage {stage.name} failed: {e}") from e
        if code != 0:
            raise NanocodeError(f"stage {stage.name} failed: nanocode {stage.command} exited with {code}")
        write_json(done, {"stage": stage.name, "seconds": round(time.monotonic() - t0, 2), "finished": time.time()})
        print(f"{head}: done in {time.monotonic() - t0:.1f}s", file=sys.stderr)
    summary = {s.name: json.loads(marker(workspace, s).read_text()) for s in stages if marker(workspace, s).exists()}
    print(
        f"speedrun: {len(summary)}/{len(stages)} stages complete in {time.monotonic() - started:.1f}s "
        f"(workspace {workspace.model_dir})",
        file=sys.stderr,
    )
    return 0
