"""The coding agent in your terminal: a trained checkpoint working in a directory with Read, Edit, Grep and Bash.

Replies stream as they are generated; each tool call is shown and run in a sandbox of the workspace (paths cannot
leave it; commands run with limits, and in namespaces where the OS allows). Edit and Bash ask first (y/n; --yes
approves everything); a "n" gives the turn back to you. The question shows the whole command or edit, control
characters escaped; a long one comes a page at a time ("m" for more), and "y" counts only once all of it was shown.
Whatever the model or a tool prints is shown with its escape sequences made visible. The model keeps going, tool
result after tool result, until it answers without a call or uses --max_steps replies. When the conversation
outgrows the context, old tool results are replaced by "[tool result dropped: N lines]", then the oldest exchanges
are dropped.

The model, checkpoint and tokenizer are found as for `nanocode chat`. The transcript (nanocode's JSONL conversation
format) goes to <tag>/agent/transcripts/ unless --transcript says where.

Commands: /clear (new conversation), /tokens (context used), /help, /quit (or Ctrl-D). Ctrl-C stops a reply.

Example: nanocode agent --gin_file experiments/debug_cpu.gin --stage align --workspace ~/src/project
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from nanocode.cli.chat import add_model_arguments, load_engine
from nanocode.cli.common import repl

HELP = """commands:
  /clear   start a new conversation
  /tokens  how much of the context the conversation uses
  /help    this help
  /quit    leave (also Ctrl-D)
Ctrl-C stops the reply being generated (or a running command)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--workspace", default=".", metavar="DIR", help="the directory the agent works in")
    parser.add_argument("--yes", action="store_true", help="approve every Edit and Bash call without asking")
    parser.add_argument("--max_steps", type=int, default=20, help="model replies per user turn at most")
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=50, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_new_tokens", type=int, default=512, help="per model reply")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds a Bash command may run")
    parser.add_argument("--network", action="store_true", help="let Bash commands use the network")
    parser.add_argument(
        "--allow-unisolated",
        action="store_true",
        help="run Bash commands even on a host without namespaces (they then see your files and network)",
    )
    parser.add_argument("--transcript", metavar="FILE", help="where to save the conversation (JSONL)")
    parser.add_argument("--prompt", help="do this one request and exit (no interactive loop)")


def run(args: argparse.Namespace) -> int:
    from nanocode.agents.agent_loop import AgentLoop
    from nanocode.agents.agent_session import AgentSession
    from nanocode.agents.permissions import Permissions
    from nanocode.agents.sandbox import Sandbox
    from nanocode.core.errors import ConfigError
    from nanocode.models.sampling import SamplingParams

    try:
        sampling = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    except ValueError as e:
        raise ConfigError(f"sampling flags: {e}") from None
    for flag in ("max_steps", "max_new_tokens"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    root = Path(args.workspace).expanduser()
    if not root.is_dir():
        raise ConfigError(f"--workspace {args.workspace}: not a directory")
    engine, codec, loaded, experiment = load_engine(args)
    transcript = Path(args.transcript) if args.transcript else (
        experiment.workspace.run_dir("agent") / "transcripts" / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.jsonl"
    )  # fmt: skip
    session = AgentSession(
        engine, codec, system=experiment.system_prompt, sampling=sampling, max_new_tokens=args.max_new_tokens
    )
    unisolated = args.allow_unisolated or None  # None: NANOCODE_ALLOW_UNISOLATED decides
    with Sandbox(root, timeout_s=args.timeout, network=args.network, allow_unisolated=unisolated) as sandbox:
        loop = AgentLoop(
            session,
            sandbox,
            permissions=Permissions(auto_approve=args.yes),
            max_steps=args.max_steps,
            transcript=transcript,
            meta={"checkpoint": str(loaded.checkpoint), "step": loaded.step, "workspace": str(sandbox.root)},
        )
        if args.prompt is not None:
            loop.run_turn(args.prompt)
            return 0
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        asks = "Edit and Bash run without asking (--yes)" if args.yes else "Edit and Bash ask first"
        print(
            f"nanocode agent: {loaded.checkpoint} (step {loaded.step}, context {engine.max_len} tokens) in "
            f"{sandbox.root}. {asks}. Transcript: {transcript}. /help for commands.",
            flush=True,
        )
        return repl(
            on_message=loop.run_turn,
            on_clear=loop.clear,
            help_text=HELP,
            usage=lambda: f"[{len(session.tokens)} of {engine.max_len} tokens used, {session.cached} cached]",
        )
