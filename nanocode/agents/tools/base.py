"""The Tool interface: a name, a one-line description, an argument schema, validation, and run().

A tool call arrives from the model as `name` + `args`, every value a string (the wire format renders `str(val)`);
an OpenAI-style client may send JSON numbers, booleans, lists or null. The model is untrusted, so
`Tool.__call__(args, sandbox)` is the one safe entry point: it validates the arguments (unknown, missing, ill-typed,
out of range, too long: each a one-line `error: ...` naming the argument; integers are coerced from strings as
nanocode does, booleans are not integers, null means "not given"), runs the tool, and turns any path escape, OS error
or unexpected exception into a tool result, so a call is never an exception in the agent loop. Results are text,
exactly as the model sees them; errors start with "error: " like nanocode's.

A fork adds a tool by subclassing `Tool` and registering it: `@TOOLS.register("Ls")`. The schema serves both the
system prompt (`prompt_template`, nanocode's own line per tool) and OpenAI-style `tools` JSON (`openai_schema`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from nanocode.agents.sandbox import Sandbox, SandboxPathError
from nanocode.data.conversation import tool_template

_INT = re.compile(r"[+-]?\d{1,18}")  # an int64 at most: longer digit strings are refused before int() sees them
_DIGITS = re.compile(r"[+-]?(\d+)")
MAX_INT = 10**9
MAX_TEXT_CHARS = 4096  # a str argument's default bound (paths, patterns); Edit and Bash raise theirs
SHOWN_VALUE_CHARS = 40  # of a rejected value, in its error line


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
    """One argument of a tool. `in_prompt` False leaves it out of nanocode's one-line prompt template. An int
    argument must lie in [minimum, maximum]; a str argument holds at most max_chars characters."""

    name: str
    type: type  # str or int
    required: bool
    description: str
    default: Any = None
    in_prompt: bool = True
    minimum: int = 0
    maximum: int = MAX_INT
    max_chars: int = MAX_TEXT_CHARS

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
        return tool_template(self.name, [a.name for a in self.args if a.in_prompt])

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
        """The first problem with `args` (not a mapping; an unknown, missing, ill-typed, out-of-range or too long
        argument), or None when they are fine."""
        if not isinstance(args, Mapping):
            return ToolError(f"the arguments of {self.name} must be named values, got {type(args).__name__}")
        known = {a.name: a for a in self.args}
        for key in args:
            if key not in known:
                expected = ", ".join(known) or "none"
                return ToolError(f"unknown argument {_shown(key)} for {self.name} (arguments: {expected})")
        for arg in self.args:
            value = args.get(arg.name)
            if value is None:
                if arg.required:
                    return ToolError(f"missing required argument '{arg.name}' for {self.name}")
                continue
            problem = _check_int(arg, value) if arg.type is int else _check_text(arg, value)
            if problem:
                return ToolError(problem)
        return None

    def coerce(self, args: Mapping[str, Any]) -> dict[str, Any]:
        """Validated args with their declared types and defaults filled in (call validate first)."""
        out = {}
        for arg in self.args:
            value = args.get(arg.name)
            if value is None:
                out[arg.name] = arg.default
            elif arg.type is int:
                out[arg.name] = int(str(value).strip())
            else:  # nanocode turned int-looking values into ints at parse time; a str argument gets its text back
                out[arg.name] = str(value)
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
        except Exception as e:  # a bug, or an input we did not foresee: the model gets one line, the agent goes on
            return ToolError(f"{self.name} failed: {type(e).__name__}: {_one_line(str(e))}")

    def run(self, args: dict[str, Any], sandbox: Sandbox) -> ToolResult:
        raise NotImplementedError


def _shown(value: Any) -> str:
    """A value for an error line: its repr, cut (with a marker) so one huge value cannot flood the line."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else f"{text[:SHOWN_VALUE_CHARS]}… ({len(text)} characters)"


def _one_line(text: str, limit: int = 200) -> str:
    first = text.strip().split("\n")[0]
    return first if len(first) <= limit else first[:limit] + "…"


def _check_int(arg: Arg, value: Any) -> str | None:
    """The one-line reason `value` is not a valid integer for `arg`, or None. Booleans are not integers; digit
    strings longer than an int64 are refused before int() (which raises on over 4300 digits)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return f"argument '{arg.name}' must be an integer, got {type(value).__name__} {_shown(value)}"
    if isinstance(value, str) and not _INT.fullmatch(value.strip()):
        digits = _DIGITS.fullmatch(value.strip())
        if digits:  # a number, but too long to be anything but an attack or a mistake
            return (
                f"{arg.name} must be between {arg.minimum} and {arg.maximum}, got a {len(digits.group(1))}-digit number"
            )
        return f"argument '{arg.name}' must be an integer, got {_shown(value)}"
    if isinstance(value, int) and value.bit_length() > 63:
        return f"{arg.name} must be at most {arg.maximum}, got an integer of {value.bit_length()} bits"
    number = int(value.strip()) if isinstance(value, str) else value
    if number < arg.minimum:
        return f"{arg.name} must be {arg.minimum} or more"
    if number > arg.maximum:
        return f"{arg.name} must be at most {arg.maximum}, got {_shown(number)}"
    return None


def _check_text(arg: Arg, value: Any) -> str | None:
    """The one-line reason `value` is not valid text for `arg`, or None: text, or an int64 (nanocode's parser
    turned int-looking values into ints), at most max_chars characters, encodable as UTF-8 (no lone surrogates)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return f"argument '{arg.name}' must be text, got {type(value).__name__}"
    if isinstance(value, int) and value.bit_length() > 63:
        return f"argument '{arg.name}' must be text, got an integer of {value.bit_length()} bits"
    text = str(value)
    if len(text) > arg.max_chars:
        return f"argument '{arg.name}' is too long ({len(text)} characters; at most {arg.max_chars})"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"argument '{arg.name}' is not valid text (character {e.start} is a lone surrogate)"
    return None


def number_lines(lines: list[str], start: int = 1) -> str:
    """nanocode's numbered view: a 5-wide right-aligned line number, an arrow, the line (`    1→import os`)."""
    return "\n".join(f"{i:>5}→{line}" for i, line in enumerate(lines, start=start))
