"""Programmatic validation of a synthetic rollout, before any critic sees it (nanocode's validate_rollout rules).

Returns a list of one-line problems; an empty list means the rollout is well formed. The rules check structure
(turn order, tool calls followed by results), the exact tool-result formats, leaks of the generator prompt, loops,
and that the rendered conversation fits the context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from nanocode.core.interfaces import Messages
from nanocode.data.conversation import ConversationCodec, ConversationError, validate_messages

# Required arguments of nanocode's four tools (a fork passes its own mapping).
DEFAULT_TOOLS: dict[str, tuple[str, ...]] = {
    "Read": ("file_path",),
    "Edit": ("file_path", "new_string"),
    "Grep": ("pattern",),
    "Bash": ("command",),
}
REJECTED = "rejected by user"
_NUMBERED = re.compile(r"^ *\d+→")
_LEAKS = ("scenario:", "tool_result format", "generate a rollout", "the agent personality")


def _is_error(result: str) -> bool:
    return result.startswith("error:")


def validate_rollout(
    messages: Messages,
    *,
    codec: ConversationCodec | None = None,
    max_tokens: int | None = None,
    tools: Mapping[str, Sequence[str]] = DEFAULT_TOOLS,
) -> list[str]:
    problems: list[str] = []
    try:
        validate_messages(messages)
    except ConversationError as e:
        return [f"structure: {e}"]
    body = [m for m in messages if m.get("role") != "system"]
    last_calls: list[tuple] = []
    for i, msg in enumerate(body):
        nxt = body[i + 1] if i + 1 < len(body) else None
        text = (msg.get("content") or "").lower()
        if any(leak in text for leak in _LEAKS):
            problems.append(f"message {i}: leaks the generator prompt")
        call = msg.get("tool_call")
        if msg.get("role") == "assistant" and call:
            name, args = call.get("name"), call.get("args") or {}
            if name not in tools:
                problems.append(f"message {i}: unknown tool {name!r}")
            else:
                missing = [a for a in tools[name] if a not in args]
                if missing:
                    problems.append(f"message {i}: {name} missing {', '.join(missing)}")
            if name == "Edit" and ("→" in str(args.get("old_string", "")) or "pattern" in args):
                problems.append(f"message {i}: Edit old_string copies line numbers or has a stray 'pattern'")
            if nxt is None or nxt.get("role") != "tool_result":
                problems.append(f"message {i}: tool call not followed by a tool_result")
            key = (name, tuple(sorted((k, str(v)) for k, v in args.items())))
            last_calls = [*last_calls[-2:], key]
            if len(last_calls) == 3 and len(set(last_calls)) == 1:
                problems.append(f"message {i}: the same tool call three times in a row")
        if msg.get("role") == "tool_result":
            result = msg.get("content") or ""
            call = body[i - 1].get("tool_call") or {}
            if result == REJECTED:
                if nxt is not None and nxt.get("role") != "user":
                    problems.append(f"message {i}: a rejection must be followed by a user turn")
            elif nxt is not None and nxt.get("role") != "assistant":
                problems.append(f"message {i}: a tool result must be followed by an assistant turn")
            if call.get("name") in ("Read", "Edit") and not _is_error(result) and result != REJECTED:
                lines = [ln for ln in result.splitlines() if ln.strip()]
                numbered = lines[1:] if call.get("name") == "Edit" else lines  # Edit: path first
                if numbered and not all(_NUMBERED.match(ln) for ln in numbered):
                    problems.append(f"message {i}: {call.get('name')} result lines are not numbered '{{i:>5}}→'")
    if codec is not None:
        rendered = codec.render(messages, max_tokens=max_tokens)
        if rendered is None:
            problems.append(f"too long: over {max_tokens} tokens")
    return problems
