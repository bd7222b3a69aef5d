"""Chat with a trained checkpoint in the terminal (streamed replies, the KV cache kept between turns).

The model and the system prompt are the experiment's, its parameters the latest checkpoint of
<tag>/<stage>/checkpoints (or --checkpoint DIR), the tokenizer <tag>/tokenizer.

Commands: /clear (new conversation), /tokens (context used), /help, /quit (or Ctrl-D). Ctrl-C stops a reply.
When the conversation outgrows the context, the oldest exchanges are dropped (the system prompt is kept).
Tool calls are shown, not run: `nanocode agent` runs them.

Example: nanocode chat --gin_file experiments/debug_cpu.gin --stage sft
         nanocode chat --gin_file experiments/debug_cpu.gin --prompt "write a haiku about tests" --temperature 0
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from nanocode.cli.common import add_checkpoint_arguments, add_config_arguments, load_experiment, repl

HELP = """commands:
  /clear   start a new conversation
  /tokens  how much of the context the conversation uses
  /help    this help
  /quit    leave (also Ctrl-D)
Ctrl-C stops the reply being generated."""


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags chat and serve share: which checkpoint, how long a context, how to sample."""
    add_config_arguments(parser)
    add_checkpoint_arguments(parser)
    parser.add_argument("--max_len", type=int, help="KV cache length in tokens (default: the model's sequence_len)")


def load_engine(args: argparse.Namespace):
    """(engine, codec, loaded, experiment) for the experiment and checkpoint the flags name."""
    from nanocode.agents.loading import load
    from nanocode.data.conversation import ConversationCodec
    from nanocode.models.engine import Engine

    experiment = load_experiment(args)
    spec, workspace = experiment.inference_model(), experiment.workspace
    loaded = load(spec, workspace, stage=args.stage, checkpoint=args.checkpoint, step=args.step)
    args.stage = loaded.stage  # "latest" resolved: the model name and messages say which
    print(f"loaded the {loaded.stage} checkpoint, step {loaded.step} ({loaded.checkpoint})", file=sys.stderr)
    engine = Engine(loaded.model, max_len=args.max_len)
    return engine, ConversationCodec(loaded.tokenizer), loaded, experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--system", help="system prompt (merged into the first user turn; default: the experiment's, '' for none)"
    )
    parser.add_argument("--temperature", type=float, default=0.6, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=50, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_new_tokens", type=int, default=512, help="per reply")
    parser.add_argument("--prompt", help="answer this one message and exit (no interactive loop)")


def describe_call(message: dict) -> str:
    """The note under a reply that makes a tool call, escaped for the terminal (the call comes from the model)."""
    from nanocode.agents.terminal import escape

    if "tool_call" in message:
        call = message["tool_call"]
        args = ", ".join(f"{k}={v!r}" for k, v in call.get("args", {}).items())
        return escape(f"[tool call] {call['name']}({args})  (tools run in `nanocode agent`)")
    if "tool_call_error" in message:
        return escape(f"[malformed tool call] {message['tool_call_error']}")
    return ""


class _StopFlag:
    """Ctrl-C during a reply sets a flag (checked between tokens) instead of raising mid-update."""

    def __init__(self):
        self.set = False

    def __enter__(self):
        self.set = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.set = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def answer(session, text: str, out=None) -> None:
    """Send one message and stream the reply to `out` (stdout); every outcome is reported, nothing raises."""
    from nanocode.agents.terminal import escape
    from nanocode.models.engine import ContextFull

    out = out or sys.stdout

    def show(delta: str) -> None:  # the model's words, with any control character shown escaped
        out.write(escape(delta))
        out.flush()

    with _StopFlag() as stop:
        try:
            reply = session.send(text, on_text=show, should_stop=lambda: stop.set)
        except ContextFull as e:
            out.write(f"[message too long: {e.needed} tokens needed, the context holds {e.available}; shorten it]\n")
            return
    out.write("\n")
    notes = [describe_call(reply.message)]
    if reply.finish_reason == "length":
        notes.append("[reply cut: token limit or end of context]")
    elif reply.finish_reason == "interrupted":
        notes.append("[stopped]")
    if reply.dropped_messages:
        notes.append(f"[context full: dropped the {reply.dropped_messages} oldest messages]")
    for note in filter(None, notes):
        out.write(note + "\n")
    out.flush()


def run(args: argparse.Namespace) -> int:
    from nanocode.agents.chat_session import ChatSession
    from nanocode.models.sampling import SamplingParams

    try:
        sampling = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    except ValueError as e:
        from nanocode.core.errors import ConfigError

        raise ConfigError(f"sampling flags: {e}") from None
    engine, codec, loaded, experiment = load_engine(args)
    system = experiment.system_prompt if args.system is None else args.system
    session = ChatSession(engine, codec, system=system or None, sampling=sampling, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        answer(session, args.prompt)
        return 0
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    params = loaded.model.param_counts()["total"]
    print(
        f"nanocode chat: {loaded.checkpoint} (step {loaded.step}, {params:,} parameters, context {engine.max_len} "
        "tokens). /help for commands."
    )
    return repl(
        on_message=lambda line: answer(session, line),
        on_clear=session.clear,
        help_text=HELP,
        usage=lambda: f"[{len(session.tokens)} of {engine.max_len} tokens used, {session.cached} cached]",
    )
