"""Permission policy: Edit and Bash ask the user first, as nanocode's CLI did (y/n); a refusal is a tool result.

`Permissions(ask)` asks through an injectable `ask(prompt) -> answer` (the console by default, a scripted answer in
tests, a web UI in `serve`; True/False stand for "y"/"n"); `Permissions(auto_approve=True)` is `--yes` mode. A tool
asks when its class says `needs_approval = True` (Edit, Bash, and any fork tool that changes things). A refusal
yields exactly nanocode's tool result `rejected by user` (ToolResult.rejected is set so the agent loop hands the
turn back to the user). Invalid calls are reported before asking: the user is never asked to approve a call that
cannot run.

What the user approves is what runs, all of it, shown as it is:
- the question shows the whole command or edit, never a cut: Edit shows old and new as Edit applies them (line
  number prefixes stripped), Bash the command, each in full;
- anything a terminal would act on (`\\r`, escape sequences, other controls, bidi overrides, zero-width characters)
  is shown as a visible escape (nanocode.agents.terminal), with a note saying so; then a real backslash is shown
  as `\\\\`, so what is shown reads back to exactly one text;
- a question longer than a page (page_rows rows, after wrapping at the terminal's width) is shown a page at a
  time: each page ends "N more lines not shown" and asks [m/n]; "m" shows the next one, and "y" is accepted only
  once the last line has been shown;
- the arguments are copied before asking, and that copy is what runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.terminal import escape_exactly, has_unsafe, rows
from nanocode.agents.tools.base import Tool, ToolResult
from nanocode.agents.tools.edit import strip_line_numbers

REJECTED = ToolResult("rejected by user", is_error=True, rejected=True)
ESCAPED_NOTE = "(note: control characters are shown escaped: \\x1b \\u202e \\r; a backslash as \\\\)"
EARLY_YES = "(y approves only what has been shown: answer m to see the rest first, or n to refuse)"
MAX_EARLY_YES = 3  # "y" answers before the end is shown, then the call is refused


def console_ask(prompt: str) -> str:
    """Ask on the terminal; the answer, lower-cased (end of input counts as "n")."""
    try:
        return input(prompt).strip().lower()
    except EOFError:
        return "n"


def _note(*texts: str) -> str:
    return f"\n{ESCAPED_NOTE}" if any(has_unsafe(t) for t in texts) else ""


def describe_call(name: str, args: Mapping[str, Any]) -> str:
    """What the user is asked to approve: the whole call, every control character escaped."""
    if name == "Bash":
        command = str(args.get("command", ""))
        return f"run `{escape_exactly(command)}`{_note(command)}"
    if name == "Edit":  # the strings as Edit applies them
        path = str(args.get("file_path", ""))
        old = strip_line_numbers(str(args.get("old_string") or ""))
        new = strip_line_numbers(str(args.get("new_string") or ""))
        shown_path, shown_old, shown_new = (escape_exactly(t) for t in (path, old, new))
        note = _note(path, old, new)
        if not old:
            return f"create {shown_path}:\n{shown_new}{note}"
        return f"edit {shown_path}:\n--- old\n{shown_old}\n+++ new\n{shown_new}{note}"
    text = f"{name} {dict(args)}"
    return escape_exactly(text) + _note(text)


def terminal_rows() -> tuple[int, int]:
    """(columns, rows of a page) for the terminal we run in (80 x 20 when it is not a terminal)."""
    size = shutil.get_terminal_size((80, 24))
    return size.columns, max(size.lines - 4, 10)


class Permissions:
    """Decides whether a tool call may run; asks through `ask` for tools that need approval."""

    def __init__(
        self,
        ask: Callable[[str], str | bool] = console_ask,
        *,
        auto_approve: bool = False,
        width: int | None = None,
        page_rows: int | None = None,
    ):
        self.ask = ask
        self.auto_approve = auto_approve
        self.width, self.page_rows = width, page_rows  # None: the terminal's, at each question

    def _answer(self, prompt: str) -> str:
        answer = self.ask(prompt)
        if isinstance(answer, bool):
            return "y" if answer else "n"
        return str(answer).strip().lower()

    def approve(self, tool: Tool, args: Mapping[str, Any]) -> bool:
        """Ask (a page at a time when the question is long); True only for "y" after the last line was shown."""
        if self.auto_approve or not tool.needs_approval:
            return True
        columns, page = terminal_rows()
        shown = rows(f"allow {tool.name}: {describe_call(tool.name, args)}", self.width or columns)
        page = max(self.page_rows or page, 1)
        start, early_yes, note = 0, 0, ""
        while True:
            end = min(start + page, len(shown))
            body = "\n".join(shown[start:end])
            if end == len(shown):
                return self._answer(f"{body}\n[y/n] ") in ("y", "yes")
            more = f"… {len(shown) - end} more lines not shown: m shows more, n refuses"
            answer = self._answer(f"{body}\n{note}{more}\n[m/n] ")
            if answer in ("m", "more"):
                start, note = end, ""
            elif answer in ("y", "yes") and early_yes < MAX_EARLY_YES:
                early_yes, note = early_yes + 1, f"{EARLY_YES}\n"  # the same page again, with the reason
            else:
                return False

    def call(self, tool: Tool, args: Mapping[str, Any], sandbox: Sandbox) -> ToolResult:
        """Validate, ask when needed, run: a refusal returns REJECTED ("rejected by user") without running."""
        problem = tool.validate(args)
        if problem is not None:
            return problem
        args = dict(args)  # what was shown is what runs, whatever happens to the caller's mapping meanwhile
        if not self.approve(tool, args):
            return REJECTED
        return tool(args, sandbox)
