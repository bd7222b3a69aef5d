"""Programmatic checks of the constitution's principles, by name. A SOUL.md section opts in with
`<!-- check: name -->`; a plugin adds a check with `@register_check("name")`.

Each check takes the conversation's messages and returns None when it passes, else a one-line reason. They look at
what a program can judge reliably (tool-call order, phrases, case); the LLM critic judges the rest.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from nanocode.core.interfaces import Messages

Check = Callable[[Messages], str | None]
CHECKS: dict[str, Check] = {}


def register_check(name: str) -> Callable[[Check], Check]:
    def decorator(fn: Check) -> Check:
        CHECKS[name] = fn
        return fn

    return decorator


def _assistant_turns(messages: Messages) -> list[dict]:
    return [m for m in messages if m.get("role") == "assistant"]


def _calls(messages: Messages) -> list[dict]:
    return [m["tool_call"] for m in _assistant_turns(messages) if m.get("tool_call")]


def _norm_path(path: str) -> str:
    return re.sub(r"^\./", "", str(path).strip())


@register_check("read_before_edit")
def read_before_edit(messages: Messages) -> str | None:
    """An Edit that changes an existing file (non-empty old_string) must come after a Read of that file."""
    read: set[str] = set()
    for call in _calls(messages):
        args = call.get("args") or {}
        path = _norm_path(args.get("file_path", ""))
        if call.get("name") == "Read":
            read.add(path)
        elif call.get("name") == "Edit" and args.get("old_string") and path not in read:
            return f"edited {path} without reading it first"
    return None


@register_check("verify_after_edit")
def verify_after_edit(messages: Messages) -> str | None:
    """After the last Edit there must be a Bash call that exercises the change."""
    calls = _calls(messages)
    edits = [i for i, c in enumerate(calls) if c.get("name") == "Edit"]
    if edits and not any(c.get("name") == "Bash" for c in calls[edits[-1] + 1 :]):
        return "changed code but never ran anything to verify it afterwards"
    return None


@register_check("think_out_loud")
def think_out_loud(messages: Messages) -> str | None:
    """Every tool call is preceded, in the same turn, by prose saying what and why."""
    for m in _assistant_turns(messages):
        if m.get("tool_call") and not (m.get("content") or "").strip():
            return f"called {m['tool_call'].get('name')} without saying what it was doing"
    return None


_CODE = re.compile(r"```.*?```|`[^`]*`", re.S)
# A sentence that opens with a capitalised ordinary word ("Sure,", "The", "I'll"); identifiers and acronyms
# (KeyError, JSON, README) are allowed because they carry more than one capital or none after the first letter.
_CAPITALISED_START = re.compile(r"(?:^|[.!?]\s+|\n\s*)([A-Z][a-z']+)\b")
_PROPER_NOUNS = {
    "Python",
    "JAX",
    "Linux",
    "Unix",
    "GitHub",
    "Git",
    "Claude",
    "Bash",
    "Read",
    "Edit",
    "Grep",
    "Docker",
    "Rust",
    "Flax",
    "PyTorch",
    "Mac",
    "Windows",
    "English",
}


@register_check("lowercase_prose")
def lowercase_prose(messages: Messages) -> str | None:
    """Assistant prose is lowercase outside code; sentences do not open with a capitalised ordinary word."""
    for m in _assistant_turns(messages):
        prose = _CODE.sub(" ", m.get("content") or "")
        for word in _CAPITALISED_START.findall(prose):
            if word not in _PROPER_NOUNS:
                return f"prose is not lowercase (a sentence starts with {word!r})"
    return None


_SYCOPHANCY = (
    "great question",
    "you're absolutely right",
    "you are absolutely right",
    "i apologize",
    "i apologise",
    "sorry for",
    "my apologies",
    "excellent question",
    "what a great",
)


@register_check("no_sycophancy")
def no_sycophancy(messages: Messages) -> str | None:
    for m in _assistant_turns(messages):
        text = (m.get("content") or "").lower()
        for phrase in _SYCOPHANCY:
            if phrase in text:
                return f"sycophantic or apologetic phrase {phrase!r}"
    return None


_FOLLOW_UPS = (
    "anything else",
    "let me know if",
    "would you like",
    "what's next",
    "what else",
    "shall i",
    "do you want me to",
    "happy to help with",
)


@register_check("no_follow_up")
def no_follow_up(messages: Messages) -> str | None:
    """The final assistant turn neither asks a question nor offers new work."""
    turns = _assistant_turns(messages)
    if not turns:
        return None
    final = _CODE.sub(" ", turns[-1].get("content") or "").lower()
    for phrase in _FOLLOW_UPS:
        if phrase in final:
            return f"ends by offering more work ({phrase!r})"
    if "?" in final:
        return "ends the task with a question"
    return None
