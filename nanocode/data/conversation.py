"""nanocode's conversation format: JSON messages <-> token ids with a loss mask, and back.

A conversation is `{"messages": [...]}` with roles `system`, `user`, `assistant` (`content` and/or one
`tool_call: {"name", "args"}`) and `tool_result`. It renders exactly as nanocode does:

    <|bos|><|user_start|>{system}\n\n{user}<|user_end|>
    <|assistant_start|>{text}<|tool_call_start|>Read<|tool_arg|>file_path<|tool_val|>a.py<|tool_call_end|><|assistant_end|>
    <|tool_result_start|>{output}<|tool_result_end|>
    <|assistant_start|>{text}<|assistant_end|>

The loss mask is 1 exactly on what the model must learn to produce: assistant text, tool-call tokens and
`<|assistant_end|>`; everything it is fed (bos, user turns, `<|assistant_start|>`, tool results) is 0. An assistant
turn with `"train": false` is fed too: a scripted mistake (a Grep for a misremembered name) that the conversation
shows so that the turns after it teach recovering from it, not making it.
Argument values are rendered with str() and parsed back as strings: coercing "5" to an int is the tool's job, so
render -> parse round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nanocode.core.interfaces import SPECIAL_TOKENS, Tokenizer

Message = dict[str, Any]

# How a conversation longer than the budget is handled: "drop" it (training data: a cut conversation teaches the
# model to stop mid-turn) or "truncate" it to the first max_tokens tokens (nanocode's behaviour, for prompts/eval).
OVERFLOW_POLICIES = ("drop", "truncate")


def tool_template(name: str, arg_names: Sequence[str]) -> str:
    """A tool's line in nanocode's system prompt, as the model was trained to read it (special tokens as plain text):

    Read:  <|tool_call_start|>Read<|tool_arg|>file_path<|tool_val|>...<|tool_call_end|>
    """
    body = "".join(f"<|tool_arg|>{arg}<|tool_val|>..." for arg in arg_names)
    return f"{name}:  <|tool_call_start|>{name}{body}<|tool_call_end|>"


class ConversationError(ValueError):
    """A conversation that does not follow the format (bad role order, empty, unknown role)."""


def scrub(text: str) -> str:
    """`text` without any special-token string (model text may copy the plain-text ones a prompt shows)."""
    while any(s in text for s in SPECIAL_TOKENS):
        for s in SPECIAL_TOKENS:
            text = text.replace(s, "")
    return text


def without_special_text(message: Message) -> Message:
    """A parsed model reply made safe to act on: special-token strings cut from its text, and a tool call whose
    name or arguments hold one turned into a tool_call_error (a path or command with `<|tool_arg|>` inside is the
    model confusing the format, never what it meant)."""
    out = dict(message)
    if isinstance(out.get("content"), str):
        out["content"] = scrub(out["content"])
    call = out.get("tool_call")
    if call is not None:
        fields = [call["name"], *call["args"].keys(), *map(str, call["args"].values())]
        if any(scrub(f) != f for f in fields):
            del out["tool_call"]
            out["tool_call_error"] = "error: the tool call holds special-token text in its name or arguments"
    return out


@dataclass
class ToolCall:
    name: str
    args: dict[str, str] = field(default_factory=dict)


@dataclass
class MalformedToolCall:
    """A tool call the model got wrong; `reason` is fed back to the model as the tool result."""

    reason: str
    raw: str = ""


def validate_messages(messages: Sequence[Message]) -> None:
    """Check types, roles and their order: optional system first, a user turn, then turns where every tool_result
    follows an assistant tool call. Data files are user input: a wrong type is a ConversationError, not a crash
    later in rendering."""
    if not isinstance(messages, list | tuple):
        raise ConversationError(f"messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise ConversationError("conversation has no messages")
    for i, msg in enumerate(messages):
        _check_message(i, msg)
    body = list(messages[1:] if messages[0].get("role") == "system" else messages)
    if not body or body[0].get("role") != "user":
        raise ConversationError("conversation must start with a user turn (after an optional system message)")
    for i, msg in enumerate(body[1:], start=1):
        role, prev = msg.get("role"), body[i - 1]
        if role not in ("user", "assistant", "tool_result"):
            raise ConversationError(f"message {i}: unknown role {role!r}")
        if role == "tool_result" and not (prev.get("role") == "assistant" and prev.get("tool_call")):
            raise ConversationError(f"message {i}: a tool_result must follow an assistant tool call")


# The scalar types a tool argument value may have (rendered with str()).
_ARG_TYPES = (str, int, float, bool)


def _check_message(i: int, msg: Any) -> None:
    if not isinstance(msg, dict):
        raise ConversationError(f"message {i}: must be an object, got {type(msg).__name__}")
    if not isinstance(msg.get("role"), str):
        raise ConversationError(f"message {i}: 'role' must be a string, got {type(msg.get('role')).__name__}")
    content = msg.get("content")
    if content is not None and not isinstance(content, str):
        raise ConversationError(f"message {i}: 'content' must be a string, got {type(content).__name__}")
    if not isinstance(msg.get("train", True), bool):
        raise ConversationError(f"message {i}: 'train' must be true or false, got {msg['train']!r}")
    call = msg.get("tool_call")
    if call is None:
        return
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise ConversationError(f"message {i}: 'tool_call' must be an object with a string 'name'")
    args = call.get("args")
    if args is None:
        return
    if not isinstance(args, dict):
        raise ConversationError(f"message {i}: tool_call 'args' must be an object, got {type(args).__name__}")
    for key, value in args.items():
        if not isinstance(value, _ARG_TYPES):
            raise ConversationError(
                f"message {i}: tool_call argument {key!r} must be a string or number, got {type(value).__name__}"
            )


class ConversationCodec:
    """Renders conversations to (ids, mask) and parses ids back, for one tokenizer."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.ids = {name.strip("<|>"): tokenizer.special_id(name) for name in SPECIAL_TOKENS}

    # ---------------------------------------------------------------------------------------------- rendering
    def render(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, overflow: str = "drop"
    ) -> tuple[list[int], list[int]] | None:
        """Token ids and the loss mask. Returns None when the conversation overflows and overflow == 'drop'."""
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        validate_messages(messages)
        messages = list(messages)
        if messages[0]["role"] == "system":  # merged into the first user turn, as nanochat
            system, first = messages[0], messages[1]
            merged = {"role": "user", "content": f"{system.get('content', '')}\n\n{first.get('content', '')}"}
            messages = [merged, *messages[2:]]
        ids, mask = [self.ids["bos"]], [0]

        def add(tokens: list[int], m: int) -> None:
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        for msg in messages:
            role = msg["role"]
            if role == "user":
                add([self.ids["user_start"]], 0)
                add(self._text(msg.get("content", "")), 0)
                add([self.ids["user_end"]], 0)
            elif role == "assistant":
                learn = int(msg.get("train", True))
                add([self.ids["assistant_start"]], 0)
                add(self._text(msg.get("content") or ""), learn)
                if msg.get("tool_call"):
                    add(self.render_tool_call(msg["tool_call"]), learn)
                add([self.ids["assistant_end"]], learn)
            else:  # tool_result
                add([self.ids["tool_result_start"]], 0)
                add(self._text(msg.get("content", "")), 0)
                add([self.ids["tool_result_end"]], 0)
        if max_tokens is not None and len(ids) > max_tokens:
            if overflow == "drop":
                return None
            ids, mask = ids[:max_tokens], mask[:max_tokens]
        return ids, mask

    def render_tool_call(self, call: Mapping[str, Any]) -> list[int]:
        out = [self.ids["tool_call_start"], *self._text(str(call["name"]))]
        for key, value in (call.get("args") or {}).items():
            out += [self.ids["tool_arg"], *self._text(str(key)), self.ids["tool_val"], *self._text(str(value))]
        return out + [self.ids["tool_call_end"]]

    def render_prompt(self, messages: Sequence[Message]) -> list[int]:
        """The ids that prime the model for its next assistant turn (conversation + <|assistant_start|>)."""
        rendered = self.render(messages)
        assert rendered is not None  # no budget given: never dropped
        return rendered[0] + [self.ids["assistant_start"]]

    def _text(self, text: str) -> list[int]:
        return self.tok.encode(text) if text else []

    # ---------------------------------------------------------------------------------------------- parsing
    def parse(self, ids: Sequence[int]) -> list[Message]:
        """Rendered ids back into messages (the system prompt stays merged into the first user turn)."""
        ids = list(ids)
        if ids and ids[0] == self.ids["bos"]:
            ids = ids[1:]
        messages: list[Message] = []
        i = 0
        ends = {
            self.ids["user_start"]: ("user", self.ids["user_end"]),
            self.ids["assistant_start"]: ("assistant", self.ids["assistant_end"]),
            self.ids["tool_result_start"]: ("tool_result", self.ids["tool_result_end"]),
        }
        while i < len(ids):
            if ids[i] not in ends:
                raise ConversationError(f"token {i}: expected the start of a turn, got id {ids[i]}")
            role, end = ends[ids[i]]
            j = i + 1
            while j < len(ids) and ids[j] != end:
                j += 1
            body = ids[i + 1 : j]
            messages.append(
                self.parse_assistant(body) if role == "assistant" else {"role": role, "content": self.tok.decode(body)}
            )
            i = j + 1
        return messages

    def parse_assistant(self, body: Sequence[int]) -> Message:
        """One assistant turn's ids (without start/end) into {"role", "content", "tool_call"?}.

        A malformed call is kept as {"tool_call_error": reason} so the agent can feed the reason back.
        """
        body = list(body)
        start = self.ids["tool_call_start"]
        message: Message = {"role": "assistant"}
        if start in body:
            k = body.index(start)
            message["content"] = self.tok.decode(body[:k])
            call = self.parse_tool_call(body[k:])
            if isinstance(call, ToolCall):
                message["tool_call"] = {"name": call.name, "args": call.args}
            else:
                message["tool_call_error"] = call.reason
        else:
            message["content"] = self.tok.decode(body)
        return message

    def parse_tool_call(
        self, ids: Sequence[int], schemas: Mapping[str, Sequence[str]] | None = None
    ) -> ToolCall | MalformedToolCall:
        """Parse `<|tool_call_start|>Name(<|tool_arg|>k<|tool_val|>v)*<|tool_call_end|>`.

        With `schemas` ({tool name: required argument names}) also report unknown tools and missing arguments.
        """
        ids = list(ids)
        raw = self.tok.decode([t for t in ids if t not in self._special_set])
        if not ids or ids[0] != self.ids["tool_call_start"]:
            return MalformedToolCall("error: tool call must start with <|tool_call_start|>", raw)
        if self.ids["tool_call_end"] not in ids:
            return MalformedToolCall("error: unterminated tool call (no <|tool_call_end|>)", raw)
        ids = ids[1 : ids.index(self.ids["tool_call_end"])]
        arg, val = self.ids["tool_arg"], self.ids["tool_val"]
        name_end = ids.index(arg) if arg in ids else len(ids)
        name = self.tok.decode(ids[:name_end]).strip()
        if not name:
            return MalformedToolCall("error: tool call has no tool name", raw)
        args: dict[str, str] = {}
        rest = ids[name_end:]
        while rest:
            if rest[0] != arg:
                return MalformedToolCall("error: malformed tool arguments", raw)
            nxt = rest.index(arg, 1) if arg in rest[1:] else len(rest)
            part, rest = rest[1:nxt], rest[nxt:]
            if val not in part:
                return MalformedToolCall(f"error: argument {self.tok.decode(part)!r} has no <|tool_val|>", raw)
            k = part.index(val)
            key, value = self.tok.decode(part[:k]).strip(), self.tok.decode(part[k + 1 :])
            if not key:
                return MalformedToolCall("error: tool argument with an empty name", raw)
            args[key] = value
        if schemas is not None:
            if name not in schemas:
                return MalformedToolCall(f"error: unknown tool {name!r} (tools: {', '.join(schemas)})", raw)
            missing = [a for a in schemas[name] if a not in args]
            if missing:
                return MalformedToolCall(f"error: {name} is missing required argument(s): {', '.join(missing)}", raw)
        return ToolCall(name, args)

    @property
    def _special_set(self) -> set[int]:
        return set(self.ids.values())
