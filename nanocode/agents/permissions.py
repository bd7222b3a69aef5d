"""Permission policy: Edit and Bash ask the user first, as nanocode's CLI did (y/n); a refusal is a tool result.

`Permissions(ask)` asks through an injectable `ask(prompt) -> bool` (the console by default, a stub answer in tests,
a web UI in `serve`); `Permissions(auto_approve=True)` is `--yes` mode. A tool asks when its class says
`needs_approval = True` (Edit, Bash, and any fork tool that changes things). A refusal yields exactly nanocode's
tool result `rejected by user` (ToolResult.rejected is set so the agent loop hands the turn back to the user).
Invalid calls are reported before asking: the user is never asked to approve a call that cannot run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from nanocode.agents.sandbox import Sandbox
from nanocode.agents.tools.base import Tool, ToolResult

REJECTED = ToolResult("rejected by user", is_error=True, rejected=True)
PREVIEW_CHARS = 2000  # how much of an edit's strings the question shows


def console_ask(prompt: str) -> bool:
    """Ask on the terminal; only y/yes approves (end of input counts as no)."""
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def describe_call(name: str, args: Mapping[str, Any]) -> str:
    """What the user is asked to approve, readable at a glance."""
    if name == "Bash":
        return f"run `{args.get('command', '')}`"
    if name == "Edit":
        path = args.get("file_path", "")
        old, new = str(args.get("old_string") or ""), str(args.get("new_string", ""))
        if not old:
            return f"create {path}:\n{new[:PREVIEW_CHARS]}"
        return f"edit {path}:\n--- old\n{old[:PREVIEW_CHARS]}\n+++ new\n{new[:PREVIEW_CHARS]}"
    return f"{name} {dict(args)}"


class Permissions:
    """Decides whether a tool call may run; asks through `ask` for tools that need approval."""

    def __init__(self, ask: Callable[[str], bool] = console_ask, *, auto_approve: bool = False):
        self.ask = ask
        self.auto_approve = auto_approve

    def approve(self, tool: Tool, args: Mapping[str, Any]) -> bool:
        if self.auto_approve or not tool.needs_approval:
            return True
        return bool(self.ask(f"allow {tool.name}: {describe_call(tool.name, args)}\n[y/n] "))

    def call(self, tool: Tool, args: Mapping[str, Any], sandbox: Sandbox) -> ToolResult:
        """Validate, ask when needed, run: a refusal returns REJECTED ("rejected by user") without running."""
        problem = tool.validate(args)
        if problem is not None:
            return problem
        if not self.approve(tool, args):
            return REJECTED
        return tool(args, sandbox)
