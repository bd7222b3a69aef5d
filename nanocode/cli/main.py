"""`nanocode COMMAND [flags]`: one console command, a module per subcommand (nanocode/cli/<command>.py).

Each subcommand module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`. Modules are imported only
when chosen, so `nanocode --help` is instant. User-facing errors (NanocodeError) print as one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from nanocode.core.errors import NanocodeError
from nanocode.core.registry import UnknownNameError
from nanocode.train.runtime import configure_process

# command -> (module, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("nanocode.cli.list_cmd", "list registered components by kind"),
    "config": ("nanocode.cli.config_cmd", "print the resolved gin config of an experiment without running it"),
    "data": ("nanocode.cli.data_cmd", "download (or build) pretraining shards of a data source"),
    "tok-train": ("nanocode.cli.tok_train", "train the BPE tokenizer on the experiment's data mixture"),
    "tok-eval": ("nanocode.cli.tok_eval", "compression ratio of the tokenizer per text type and data source"),
    "plan": ("nanocode.cli.plan", "parameter and FLOP counts, tokens per step and step count of an experiment"),
    "pretrain": ("nanocode.cli.pretrain", "pretrain a base model"),
    "sft": ("nanocode.cli.sft", "agentic supervised fine-tuning"),
    "synth": ("nanocode.cli.synth", "constitutional AI: scenarios, rollouts, critique, revision, preference pairs"),
    "align": ("nanocode.cli.align", "preference optimisation (DPO, IPO, KTO, plugins) against a frozen reference"),
    "rl": ("nanocode.cli.rl", "reinforcement learning on agentic tasks, rewarded by their hidden checks (GRPO)"),
    "eval": ("nanocode.cli.eval_cmd", "evaluate a checkpoint (core, humaneval, agentic suites)"),
    "report": ("nanocode.cli.report", "write the run report (markdown, plots, html) from what the stages wrote"),
    "chat": ("nanocode.cli.chat", "interactive terminal chat with a checkpoint"),
    "agent": ("nanocode.cli.agent", "the coding agent, working in a directory"),
    "serve": ("nanocode.cli.serve", "OpenAI-compatible HTTP server"),
    "export": ("nanocode.cli.export", "export a checkpoint for other frameworks (--format hf: transformers)"),
    "speedrun": ("nanocode.cli.speedrun", "every stage in order, each skipped when already complete"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose module exists in this checkout."""
    out = {}
    for name, (module, help_text) in COMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            out[name] = (module, help_text)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanocode", description="Train your own agentic coding model in JAX.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in available_commands().items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def parse_command_args(name: str, argv: list[str]) -> tuple[object, argparse.Namespace]:
    """The command's module and its parsed arguments (argparse exits on bad flags, as a CLI should)."""
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(
        prog=f"nanocode {name}", description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    module.add_arguments(parser)
    return module, parser.parse_args(argv)


def run_command(name: str, argv: list[str]) -> int:
    """Run one subcommand in this process; NanocodeError propagates to the caller (main prints it)."""
    module, args = parse_command_args(name, argv)
    return int(module.run(args) or 0)


def _quiet_after_a_failed_read(unraisable) -> None:
    """After a one-line error, orbax's abandoned tensorstore reads (a checkpoint of another shape) call back into
    its closed event loop at exit; those tracebacks would bury the line that explains the failure. Anything else
    unraisable is still reported."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = available_commands()
    if not argv or argv[0] not in commands:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r} (commands: {', '.join(commands)})")
        parser.parse_args(argv or ["--help"])
        return 0
    name, rest = argv[0], argv[1:]
    configure_process()  # XLA:CPU scheduler and malloc settings: only take effect before JAX starts its backend
    try:
        return run_command(name, rest)
    except (NanocodeError, UnknownNameError) as e:  # user-facing: the message is the whole story
        print(f"nanocode {name}: error: {e}", file=sys.stderr)
        sys.unraisablehook = _quiet_after_a_failed_read
        return 2
    except KeyboardInterrupt:
        print(f"nanocode {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
