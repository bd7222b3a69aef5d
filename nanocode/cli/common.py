"""Flags every experiment-driven command shares, and the one way they are turned into a parsed config."""

from __future__ import annotations

import argparse


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gin_file",
        action="append",
        default=[],
        metavar="FILE",
        help="gin experiment file (repeatable; later files override earlier ones)",
    )
    parser.add_argument(
        "--gin_param",
        action="append",
        default=[],
        metavar="BINDING",
        help="a gin binding such as 'Experiment.tag = \"d12\"' (repeatable; applied after the files)",
    )
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module that registers components before parsing (repeatable)",
    )


def add_checkpoint_arguments(parser: argparse.ArgumentParser) -> None:
    """Which checkpoint a command reads (chat, agent, serve, export): a stage's latest, or a directory and step."""
    from nanocode.agents.loading import STAGES

    parser.add_argument(
        "--stage",
        default="latest",
        choices=(*STAGES, "latest"),
        help="whose checkpoint (default: the last stage that has one: rl, align, sft, pretrain)",
    )
    parser.add_argument("--checkpoint", metavar="DIR", help="a checkpoints directory or one step in it")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest complete one)")


def load_experiment(args: argparse.Namespace):
    """Built-ins, then plugins, then gin files and bindings, then the Experiment built and validated, every stage
    included (nanocode.cli.experiment). Raises ConfigError (one line, naming the file) on any problem."""
    from nanocode.cli.experiment import load

    return load(args.gin_file, args.gin_param, args.plugin)


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of every training stage (pretrain, sft, align, rl)."""
    add_config_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint if there is one")
    parser.add_argument(
        "--force", action="store_true", help="resume even if the checkpoint's config, tokenizer or data differ"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_training(args: argparse.Namespace, stage: str) -> int:
    """Build the experiment, join the other processes, then run its training stage `stage` (an Experiment field)."""
    from nanocode.core import config, distributed

    experiment = load_experiment(args)
    training = experiment.stage(stage)
    config.build(distributed.initialize)  # every process joins before any device is touched
    training.run(experiment.workspace, resume=args.resume, force=args.force, progress=not args.quiet)
    return 0


def repl(*, on_message, on_clear, help_text: str, usage) -> int:
    """The read loop of `chat` and `agent`: /quit, /exit, /clear, /help, /tokens; any other line is a message.

    Ctrl-D ends it, Ctrl-C at the prompt only clears the line (a reply in progress handles its own Ctrl-C)."""
    import sys

    while True:
        try:
            line = input("> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            continue
        command = line.strip()
        if not command:
            continue
        if command in ("/quit", "/exit"):
            return 0
        if command == "/clear":
            on_clear()
            print("[new conversation]")
        elif command == "/help":
            print(help_text)
        elif command == "/tokens":
            print(usage())
        elif command.startswith("/") and " " not in command:
            print(f"unknown command {command}; /help lists them")
        else:
            on_message(line)
        sys.stdout.flush()
