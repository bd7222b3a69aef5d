"""The interactive agent loop: the model works in a directory through the tools, asking before it changes things.

One user turn:
  the user's message is added and the model replies (text streamed as it is generated);
  - a tool call: shown, then run through the Permissions (Edit and Bash ask y/n unless --yes) in the Sandbox of the
    workspace; its result (or the error for an unknown tool or bad arguments) is fed back as a tool_result and the
    model goes on;
  - a malformed call: its error is fed back the same way (the model sees why and may retry);
  - a refusal ("rejected by user"), Ctrl-C, a reply without a call, a full context or the step budget (max_steps
    model replies per user turn) hands the turn back to the user. When the budget is reached on a reply that makes
    a call, the call is not run: "error: step budget ... reached; the call was not run" is its result, so the
    conversation stays well-formed and nothing runs without the model being answered.
Nothing the model emits ends the loop: every outcome is a tool result or a notice, and a tool that raises anyway (a
bug, a fork tool, an ask that fails) becomes an `error: ...` result like any other.

What reaches the terminal is made safe (nanocode.agents.terminal): the model's words, the tool-call line and the
tool's output are shown with every control character escaped, so no escape sequence from the model or from a file
clears the screen, rewrites a line or sets the clipboard. The model and the transcript get the exact text: it has
to see a file's bytes to edit them. The tool-call line shows each value as a Python literal; a Bash command in full,
other values up to SHOWN_ARG_CHARS characters with the number left out said (the approval question, if any, shows
everything).

The context rule is AgentSession's (old tool results become "[tool result dropped: N lines]", oldest first, then
the oldest exchanges go). The transcript, the full conversation as it happened (nothing elided), is saved after
every step as JSONL in nanocode's conversation format: one line `{"messages": [...], ...}` per conversation
(/clear starts the next), rewritten atomically.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from nanocode.agents.agent_session import AgentSession
from nanocode.agents.permissions import Permissions
from nanocode.agents.policy import system_prompt
from nanocode.agents.sandbox import Sandbox
from nanocode.agents.terminal import escape, for_display
from nanocode.agents.tools import Tool, ToolError, ToolResult, build_tools
from nanocode.core.io import write_text
from nanocode.data.conversation import Message
from nanocode.models.engine import ContextFull

SHOWN_RESULT_LINES = 8  # of a tool result, on the terminal (the model gets all of it)
SHOWN_ROW_CHARS = 1000  # of each of those lines
SHOWN_ARG_CHARS = 200  # of an argument in the tool-call line; a Bash command is shown whole
SHOWN_IN_FULL = ("command",)


@dataclass
class TurnOutcome:
    steps: int  # model replies this turn
    tool_calls: int  # well-formed calls the model made (run, refused, or failing validation)
    stop: str  # end_turn | rejected | budget | interrupted | context_full


def describe_call(call: Mapping[str, Any]) -> str:
    """`Name(arg='value', ...)`, every value a Python literal (controls escaped by repr), a long one cut with the
    count of characters left out; a command is never cut."""

    def shown(key: Any, value: Any) -> str:
        text = value if isinstance(value, str) else str(value) if isinstance(value, (int, float)) else repr(value)
        if len(text) <= SHOWN_ARG_CHARS or key in SHOWN_IN_FULL:
            return repr(text)
        return f"{text[:SHOWN_ARG_CHARS]!r}… [{len(text) - SHOWN_ARG_CHARS} more characters]"

    args = call.get("args")
    args = args if isinstance(args, Mapping) else {"args": args} if args else {}
    inner = ", ".join(f"{escape(str(k))}={shown(k, v)}" for k, v in args.items())
    return escape(f"{call.get('name')}({inner})")


def preview(text: str, lines: int = SHOWN_RESULT_LINES) -> str:
    """The first lines of a tool result for the terminal, escaped and each cut at SHOWN_ROW_CHARS, with the number
    of lines (and characters) left out."""
    rows = text.removesuffix("\n").split("\n")
    shown = []
    for row in rows[:lines]:
        row = row.removesuffix("\r")
        cut = f"… [{len(row) - SHOWN_ROW_CHARS} more characters]" if len(row) > SHOWN_ROW_CHARS else ""
        shown.append(f"  | {for_display(row[:SHOWN_ROW_CHARS])}{cut}")
    if len(rows) > lines:
        shown.append(f"  | … ({len(rows) - lines} more lines)")
    return "\n".join(shown)


class _Interrupt:
    """Ctrl-C while the model generates sets a flag (checked between tokens) instead of raising mid cache update."""

    def __init__(self):
        self.set = False

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self.set = False
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _handle(self, signum, frame) -> None:
        self.set = True


class AgentLoop:
    """A conversation with the model acting on `sandbox.root` (see the module docstring)."""

    def __init__(
        self,
        session: AgentSession,
        sandbox: Sandbox,
        *,
        tools: Mapping[str, Tool] | None = None,
        permissions: Permissions | None = None,
        max_steps: int = 20,
        out: TextIO | None = None,
        transcript: str | Path | None = None,
        meta: Mapping[str, Any] | None = None,
    ):
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.session, self.sandbox = session, sandbox
        self.tools = dict(build_tools() if tools is None else tools)
        self.permissions = permissions or Permissions()
        self.max_steps = max_steps
        self.out = out or sys.stdout
        self.transcript = Path(transcript) if transcript is not None else None
        self.meta = dict(meta or {})
        if session.system is None:
            session.system = system_prompt(self.tools)
        self._done: list[dict[str, Any]] = []  # finished conversations of the transcript
        self._interrupt = _Interrupt()
        self._at_line_start = True
        self.clear()

    # ---------------------------------------------------------------------------------------------- state
    def clear(self) -> None:
        """Start a new conversation (the previous one stays in the transcript)."""
        if getattr(self, "history", None) and len(self.history) > 1:
            self._done.append(self._record())
        self.session.clear()
        self.history: list[Message] = [{"role": "system", "content": self.session.system}]
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")

    def _record(self) -> dict[str, Any]:
        return {"messages": list(self.history), "started": self.started, **self.meta}

    def save(self) -> None:
        if self.transcript is None:
            return
        records = [*self._done, self._record()] if len(self.history) > 1 else list(self._done)
        write_text(self.transcript, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def _say(self, text: str) -> None:
        """Write to the terminal; everything goes through here, escaped (our own notes have nothing to escape)."""
        text = escape(text)
        if text:
            self.out.write(text)
            self.out.flush()
            self._at_line_start = text.endswith("\n")

    def _end_line(self) -> None:
        if not self._at_line_start:
            self._say("\n")

    def _note(self, text: str) -> None:
        self._end_line()
        self._say(f"[{text}]\n")

    # ---------------------------------------------------------------------------------------------- one turn
    def run_turn(self, text: str) -> TurnOutcome:
        """Answer one user message, running tools until the model ends its turn (or the turn is handed back)."""
        steps = calls = 0
        try:
            reply = self._generate(first=text)
        except ContextFull as e:
            self._note(f"message too long: {e.needed} tokens needed, the context holds {e.available}; shorten it")
            return TurnOutcome(0, 0, "context_full")
        self.history.append({"role": "user", "content": text})
        while True:
            steps += 1
            message = reply.message
            self.history.append(dict(message))
            self._show_notes(reply)
            if reply.finish_reason == "interrupted":
                self._finish_turn()
                self._note("stopped")
                return TurnOutcome(steps, calls, "interrupted")
            if "tool_call" in message:
                self._say(f"-> {describe_call(message['tool_call'])}\n")
                calls += 1
                if steps >= self.max_steps:
                    result = ToolError(f"step budget of {self.max_steps} replies reached; the call was not run")
                else:
                    result = self._run_tool(message["tool_call"])
            elif "tool_call_error" in message:
                self._say(f"-> malformed tool call: {message['tool_call_error']}\n")
                result = ToolResult(message["tool_call_error"], is_error=True)
            else:
                self._finish_turn()
                return TurnOutcome(steps, calls, "end_turn")
            self._add_result(result)
            if result.rejected:
                self._finish_turn()
                self._note("the call was not run; back to you")
                return TurnOutcome(steps, calls, "interrupted" if "interrupted" in result.text else "rejected")
            if steps >= self.max_steps:
                self._finish_turn()
                self._note(f"step budget reached: {steps} model replies this turn; back to you")
                return TurnOutcome(steps, calls, "budget")
            try:
                reply = self._generate()
            except ContextFull as e:
                self._finish_turn()
                self._note(f"context full ({e.needed} tokens needed, {e.available} available); /clear to start over")
                return TurnOutcome(steps, calls, "context_full")

    def _generate(self, first: str | None = None):
        with self._interrupt.armed():
            stop = lambda: self._interrupt.set  # noqa: E731
            if first is not None:
                return self.session.send(first, on_text=self._say, should_stop=stop)
            return self.session.reply(on_text=self._say, should_stop=stop)

    def _show_notes(self, reply) -> None:
        self._end_line()
        if reply.dropped_messages:
            self._note(f"context full: dropped the {reply.dropped_messages} oldest messages")
        if reply.finish_reason == "length" and "tool_call" not in reply.message:
            self._note("reply cut: token limit or end of context")

    def _run_tool(self, call: Mapping[str, Any]) -> ToolResult:
        """Run one call through the permissions; every failure is a result, never an exception."""
        name = call.get("name")
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            result: ToolResult = ToolError(f"unknown tool {name!r} (tools: {', '.join(self.tools)})")
        else:
            try:
                result = self.permissions.call(tool, call.get("args") or {}, self.sandbox)
            except KeyboardInterrupt:
                self._say("\n")
                result = ToolResult("interrupted by user", is_error=True, rejected=True)
            except Exception as e:  # a tool or an ask that raises: the model is told, the loop goes on
                reason = (str(e).strip().split("\n") or [""])[0][:200]
                result = ToolError(f"{name} failed: {type(e).__name__}: {reason}")
        self._say(preview(result.text) + "\n")
        return result

    def _add_result(self, result: ToolResult) -> None:
        message = {"role": "tool_result", "content": result.text}
        self.session.add(message)
        self.history.append(message)
        self.save()

    def _finish_turn(self) -> None:
        self.save()
