"""OpenAI chat-completions requests -> nanocode messages and sampling parameters, each field checked.

Messages map onto nanocode's format: system (and developer) messages, which must come first, become the system
prompt (merged into the first user turn); user -> user; tool -> tool_result; an assistant message's `tool_calls`
become nanocode tool-call tokens (arguments' JSON values rendered as strings; several calls in one message become
consecutive nanocode turns, each followed by its result, since nanocode makes one call per turn). Text content
parts are joined; other content types are refused. `tools` is accepted and checked for shape; the model is not shown
it (a nanocode model learns its tools from its system prompt, which the client sends); its declared parameter types
turn the model's string arguments back into numbers/booleans (`typed_arguments`).

Anything else is refused with a RequestError: an HTTP status, a one-line message and the field at fault.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nanocode.data.conversation import ConversationError, Message, validate_messages
from nanocode.models.sampling import SamplingParams


class RequestError(Exception):
    """A request the server refuses: HTTP status, a one-line message, the OpenAI error type and the field at fault."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


def bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, "invalid_request_error", param)


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad(f"{where}: only text content parts are supported", where)
            parts.append(part["text"])
        return "".join(parts)
    raise bad(f"{where}: content must be a string or a list of text parts", where)


def _call_from_openai(call: Any, where: str) -> tuple[str | None, dict[str, Any]]:
    """(id, nanocode tool_call) of one OpenAI assistant tool call."""
    fn = call.get("function") if isinstance(call, dict) else None
    if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]):
        raise bad(f"{where}: a tool call needs function.name", where)
    raw = fn.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise bad(f"{where}: function.arguments is not valid JSON", where) from None
    if not isinstance(args, dict):
        raise bad(f"{where}: function.arguments must be a JSON object", where)
    args = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}
    return call.get("id"), {"name": fn["name"], "args": args}


def to_nanocode(messages: Any) -> list[Message]:
    """OpenAI chat messages -> nanocode messages (see the module docstring for the mapping)."""
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list", "messages")
    system: list[str] = []
    out: list[Message] = []
    calls: list[tuple[str | None, dict]] = []  # the last assistant message's calls that have no result yet
    first_call_emitted = False  # the first of them was rendered with the assistant message itself
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object", where)
        role = m.get("role")
        if role in ("system", "developer"):
            if out:
                raise bad(f"{where}: system messages must come before the conversation", where)
            system.append(_text(m.get("content"), where))
        elif role == "user":
            out.append({"role": "user", "content": _text(m.get("content"), where)})
            calls = []
        elif role == "assistant":
            message: Message = {"role": "assistant", "content": _text(m.get("content"), where)}
            raw_calls = m.get("tool_calls") or []
            if not isinstance(raw_calls, list):
                raise bad(f"{where}: tool_calls must be a list", where)
            calls = [_call_from_openai(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(raw_calls)]
            if calls:
                message["tool_call"] = calls[0][1]
            first_call_emitted = bool(calls)
            out.append(message)
        elif role == "tool":
            if not calls:
                raise bad(f"{where}: a tool message must answer a tool call of the assistant message before it", where)
            ids = [c[0] for c in calls]
            call_id = m.get("tool_call_id")
            k = ids.index(call_id) if call_id in ids else 0
            if call_id is not None and call_id not in ids and any(ids):
                raise bad(f"{where}: tool_call_id {call_id!r} matches no pending tool call", where)
            _, call = calls.pop(k)
            if not (first_call_emitted and k == 0):  # one nanocode turn per call
                out.append({"role": "assistant", "content": "", "tool_call": call})
            first_call_emitted = False
            out.append({"role": "tool_result", "content": _text(m.get("content"), where)})
        else:
            raise bad(f"{where}: unknown role {role!r} (system, developer, user, assistant, tool)", where)
    if system:
        out.insert(0, {"role": "system", "content": "\n\n".join(system)})
    try:
        validate_messages(out)
    except ConversationError as e:
        raise bad(f"messages: {e}", "messages") from None
    return out


@dataclass
class ToolSpec:
    name: str
    types: dict[str, str] = field(default_factory=dict)  # argument -> JSON schema type


def parse_tools(tools: Any) -> dict[str, ToolSpec]:
    if tools is None:
        return {}
    if not isinstance(tools, list):
        raise bad("tools must be a list", "tools")
    out = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not (isinstance(fn, dict) and isinstance(fn.get("name"), str) and fn["name"]):
            raise bad(f"tools[{i}]: expected {{'type': 'function', 'function': {{'name': ..., ...}}}}", "tools")
        props = (fn.get("parameters") or {}).get("properties") or {}
        if not isinstance(props, dict):
            raise bad(f"tools[{i}].function.parameters.properties must be an object", "tools")
        out[fn["name"]] = ToolSpec(fn["name"], {k: v.get("type") for k, v in props.items() if isinstance(v, dict)})
    return out


def typed_arguments(args: Mapping[str, str], spec: ToolSpec | None) -> dict[str, Any]:
    """The model's string arguments, turned into the JSON types the tool declares where they parse as such."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        kind = spec.types.get(key) if spec else None
        try:
            if kind == "integer":
                out[key] = int(value)
            elif kind == "number":
                out[key] = float(value)
            elif kind == "boolean" and value.strip().lower() in ("true", "false"):
                out[key] = value.strip().lower() == "true"
            elif kind in ("object", "array"):
                out[key] = json.loads(value)
            else:
                out[key] = value
        except ValueError:
            out[key] = value
    return out


@dataclass
class CompletionRequest:
    messages: list[Message]
    sampling: SamplingParams
    max_tokens: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    tools: dict[str, ToolSpec]


def _number(body: dict, key: str, default, kind=float, lo=None, hi=None):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise bad(f"{key} must be {'an integer' if kind is int else 'a number'}", key)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise bad(f"{key} = {value} is out of range [{lo}, {hi}]", key)
    return kind(value)


def parse_request(body: Any) -> CompletionRequest:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    messages = to_nanocode(body.get("messages"))
    temperature = _number(body, "temperature", 1.0, float, 0, 2)
    top_p = _number(body, "top_p", 1.0, float, 0, 1)
    top_k = _number(body, "top_k", 0, int, 0, None)  # not OpenAI's, but common in compatible servers
    seed = _number(body, "seed", None, int, None, None)
    if top_p == 0:
        temperature = 0.0  # the nucleus of p = 0 is the most likely token alone
        top_p = 1.0
    max_tokens = _number(body, "max_completion_tokens", None, int, 1, None)
    max_tokens = _number(body, "max_tokens", max_tokens, int, 1, None)
    if _number(body, "n", 1, int, 1, None) != 1:
        raise bad("only n = 1 is supported", "n")
    if body.get("logprobs"):
        raise bad("logprobs are not supported", "logprobs")
    fmt = body.get("response_format")
    if fmt not in (None, {"type": "text"}):
        raise bad("only response_format {'type': 'text'} is supported", "response_format")
    stop = body.get("stop")
    stop = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop)):
        raise bad("stop must be a string or a list of at most 4 strings", "stop")
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise bad("stream must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("stream_options must be an object", "stream_options")
    seed = seed if seed is not None else int.from_bytes(uuid.uuid4().bytes[:4], "little")
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed % 2**32)
    return CompletionRequest(
        messages, sampling, max_tokens, stop, stream, bool(options.get("include_usage")), parse_tools(body.get("tools"))
    )
