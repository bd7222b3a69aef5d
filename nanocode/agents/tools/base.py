"""The Tool interface: a name, a one-line description, an argument schema, validation, and run().

A tool call arrives from the model as `name` + `args`, every value a string (the wire format renders `str(val)`).
`Tool.__call__(args, sandbox)` is the one safe entry point: it validates the arguments (unknown, missing, ill-typed:
integers are coerced from strings as nanocode does), runs the tool, and turns any path escape or OS error into a
tool result, so a bad call is never an exception in the agent loop. Results are text, exactly as the model sees them;
errors start with "error: " like nanocode's.

A fork adds a tool by subclassing `Tool` and registering it: `@TOOLS.register("Ls")`. The schema serves both the
system prompt (`prompt_template`, nanocode's own line per tool) and OpenAI-style `tools` JSON (`openai_schema`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nanocode.agents.sandbox import Sandbox, SandboxPathError

_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class ToolResult:
    """What the model sees after a call (`text`), whether it is an error, and whether the user refused the call."""

    text: str
    is_error: bool = False
    rejected: bool = False


class ToolError(ToolResult):
    """A failed call; the text is `error: {message}` as nanocode writes it."""

    def __init__(self, message: str):
        super().__init__(f"error: {message}", True, False)


class ToolFailure(Exception):
    """Raise inside run() (or a helper) to end the call with `error: {message}`."""


@dataclass(frozen=True)
class Arg:
    """One argument of a tool. `in_prompt` False leaves it out of nanocode's one-line prompt template."""

    name: str
    type: type  # str or int
    required: bool
    description: str
    default: Any = None
    in_prompt: bool = True

    @property
    def json_type(self) -> str:
        return {str: "string", int: "integer"}[self.type]


class Tool:
    """Base class of agent tools; subclasses set name/description/args/needs_approval and implement run()."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    args: ClassVar[tuple[Arg, ...]] = ()
    needs_approval: ClassVar[bool] = False  # Edit and Bash change things: the permission policy asks first

    # -- schema ---------------------------------------------------------------------------------------------------
    def prompt_template(self) -> str:
        """nanocode's system-prompt line: `Read:  <|tool_call_start|>Read<|tool_arg|>file_path<|tool_val|>...`."""
        body = "".join(f"<|tool_arg|>{a.name}<|tool_val|>..." for a in self.args if a.in_prompt)
        return f"{self.name}:  <|tool_call_start|>{self.name}{body}<|tool_call_end|>"

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI `tools` entry (chat-completions function calling) for this tool."""
        properties = {a.name: {"type": a.json_type, "description": a.description} for a in self.args}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": properties,
                    "required": [a.name for a in self.args if a.required],
                },
            },
        }

    # -- calling --------------------------------------------------------------------------------------------------
    def validate(self, args: Mapping[str, Any]) -> ToolError | None:
        """The first problem with `args` (unknown, missing or ill-typed argument), or None when they are fine."""
        known = {a.name: a for a in self.args}
        for key in args:
            if key not in known:
                expected = ", ".join(known) or "none"
                return ToolError(f"unknown argument '{key}' for {self.name} (arguments: {expected})")
        for arg in self.args:
            if arg.required and arg.name not in args:
                return ToolError(f"missing required argument '{arg.name}' for {self.name}")
            if arg.name in args and arg.type is int and not _is_int(args[arg.name]):
                return ToolError(f"argument '{arg.name}' must be an integer, got {str(args[arg.name])!r}")
        return None

    def coerce(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validated args with their declared types and defaults filled in (call validate first)."""
        out = {}
        for arg in self.args:
            if arg.name not in args:
                out[arg.name] = arg.default
            elif arg.type is int:
                out[arg.name] = int(str(args[arg.name]).strip())
            else:  # nanocode turned int-looking values into ints at parse time; a str argument gets its text back
                out[arg.name] = str(args[arg.name])
        return out

    def __call__(self, args: Mapping[str, Any], sandbox: Sandbox) -> ToolResult:
        """Validate, run, and report any failure as a tool result: never raises for a bad call."""
        problem = self.validate(args)
        if problem is not None:
            return problem
        try:
            return self.run(self.coerce(args), sandbox)
        except (SandboxPathError, ToolFailure) as e:
            return ToolError(str(e))
        except OSError as e:  # permissions, a file vanishing mid-call, a full disk: tell the model, do not crash
            return ToolError(e.strerror.lower() if e.strerror else str(e))

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        raise NotImplementedError


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or bool(_INT.fullmatch(str(value).strip()))


def number_lines(lines: list[str], start: int = 1) -> str:
    """nanocode's numbered view: a 5-wide right-aligned line number, an arrow, the line (`    1→import os`)."""
    return "\n".join(f"{i:>5}→{line}" for i, line in enumerate(lines, start=start))
