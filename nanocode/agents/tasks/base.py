"""What an agentic task is: a small repository, a user request, a hidden check, and a scripted solution.

A `Task` is plain data (JSON-serialisable through `to_dict`): the files of a real repository, the request the user
types, the check that decides success after the agent's turn, and the scripted solution an expert would follow:
`Step`s (prose said out loud, then one tool call) and a final message. Each step may state what its tool result must
look like (`expect_error`, `expect`): the prose of the next step is written from that knowledge, so a replay whose
real results disagree is refused rather than turned into a conversation whose words do not match its tool results.

Checks are hidden from the agent: `CommandCheck` writes its files into the workspace only after the agent is done
(over anything the agent put there), then runs a command that must exit 0; `AnswerCheck` looks for `path:line`
in the agent's final message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from nanocode.core.interfaces import Messages


@dataclass(frozen=True)
class Step:
    """One scripted assistant turn: think out loud (`say`), then call `tool` with `args` (all values strings)."""

    say: str
    tool: str
    args: dict[str, str]
    expect_error: bool | None = None  # None: either; True/False: the result must (not) be an error
    expect: str | None = None  # a substring the result must contain
    # False: a mistake the script shows so that the next step can recover from it; SFT does not teach the model to
    # make it (the codec masks the turn, `train: false`), only to see it in its context and go on from there.
    train: bool = True

    def message(self) -> dict[str, Any]:
        call = {"role": "assistant", "content": self.say, "tool_call": {"name": self.tool, "args": dict(self.args)}}
        return call if self.train else {**call, "train": False}

    def mismatch(self, result_text: str, is_error: bool) -> str | None:
        """Why a real tool result contradicts this step's expectation, or None when it agrees."""
        if self.expect_error is not None and is_error != self.expect_error:
            want = "an error" if self.expect_error else "success"
            return f"{self.tool} expected {want}, got: {result_text[:200]!r}"
        if self.expect is not None and self.expect not in result_text:
            return f"{self.tool} result lacks {self.expect!r}: {result_text[:200]!r}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "say": self.say,
            "tool": self.tool,
            "args": dict(self.args),
            "expect_error": self.expect_error,
            "expect": self.expect,
            "train": self.train,
        }


@dataclass(frozen=True)
class Script:
    """A scripted solution: the tool-calling steps, then the final message that ends the turn."""

    steps: tuple[Step, ...]
    final: str

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [s.to_dict() for s in self.steps], "final": self.final}


@dataclass(frozen=True)
class CheckResult:
    passed: bool
    detail: str


@dataclass(frozen=True)
class CommandCheck:
    """Write `files` (hidden from the agent) into the workspace, then run `command`: success is exit code 0."""

    command: str
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "command", "command": self.command, "files": dict(self.files)}


@dataclass(frozen=True)
class AnswerCheck:
    """The final assistant message names `path:line` (an optional `./` in front; a longer number does not count)."""

    path: str
    line: int

    def pattern(self) -> re.Pattern[str]:
        return re.compile(rf"(?<![\w/.])(?:\./)?{re.escape(self.path)}:{self.line}(?!\d)")

    def judge(self, messages: Messages) -> CheckResult:
        finals = [m for m in messages if m.get("role") == "assistant" and not m.get("tool_call")]
        answer = (finals[-1].get("content") or "") if finals else ""
        if self.pattern().search(answer):
            return CheckResult(True, f"answer names {self.path}:{self.line}")
        return CheckResult(False, f"final answer does not name {self.path}:{self.line}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": "answer", "path": self.path, "line": self.line}


Check = CommandCheck | AnswerCheck


@dataclass(frozen=True)
class Task:
    """A task over a real small repository (see the module docstring)."""

    id: str
    kind: str  # fix_bug | implement | rename | locate
    template: str  # e.g. "fix_bug:skip_first"; training and held-out eval templates never share one
    repo: str  # the repository's directory name
    files: dict[str, str]
    request: str
    check: Check
    solution: Script
    facts: dict[str, Any] = field(default_factory=dict)  # names the templates chose (for variants, logs, tests)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "template": self.template,
            "repo": self.repo,
            "files": dict(self.files),
            "request": self.request,
            "check": self.check.to_dict(),
            "solution": self.solution.to_dict(),
            "facts": dict(self.facts),
        }
