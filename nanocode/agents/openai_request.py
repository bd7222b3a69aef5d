"""OpenAI chat-completions requests -> nanocode messages, tools and sampling parameters, each field checked.

Messages map onto nanocode's format: system (and developer) messages, which must come first, become the system
prompt (merged into the first user turn); user -> user; tool -> tool_result; an assistant message's `tool_calls`
become nanocode tool-call tokens (arguments' JSON values rendered as strings; several calls in one message become
consecutive nanocode turns, each followed by its result, since nanocode makes one call per turn). Text content
parts are joined; other content types are refused. `tools` and `tool_choice` are read by tool_schema.py, which also
puts the tools into the system prompt.

Every sampling parameter is range-checked here, before the request is queued: a value the engine cannot take
(top_k = 2**40 overflows its int32 arrays) would otherwise fail every request batched with it. Anything else is
refused with a RequestError (api_errors.py): an HTTP status, a one-line message, the field at fault and a code.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from nanocode.agents.api_errors import RequestError, bad
from nanocode.agents.tool_schema import FunctionTool, ToolChoice, parse_tool_choice, parse_tools, show_tools
from nanocode.data.conversation import ConversationError, Message, validate_messages
from nanocode.models.sampling import SamplingParams

__all__ = ["CompletionRequest", "RequestError", "bad", "parse_request", "parse_sampling", "to_nanocode"]


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
class CompletionRequest:
    model: str | None
    messages: list[Message]  # the tools already in the system prompt (tool_schema.show_tools)
    sampling: SamplingParams
    max_tokens: int | None
    stop: list[str]
    stream: bool
    include_usage: bool
    tools: dict[str, FunctionTool]
    tool_choice: ToolChoice


def number_field(body: dict, key: str, default, kind=float, lo=None, hi=None):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise bad(f"{key} must be {'an integer' if kind is int else 'a number'}", key)
    if value != value or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise bad(f"{key} = {value} is out of range [{lo}, {hi}]", key)
    return kind(value)


def parse_sampling(body: dict, vocab_size: int) -> SamplingParams:
    """temperature [0, 2], top_p [0, 1], top_k [0, vocab] (not OpenAI's; common in compatible servers), a 64-bit
    seed (random when absent); penalties and logit_bias only at their neutral values."""
    temperature = number_field(body, "temperature", 1.0, float, 0, 2)
    top_p = number_field(body, "top_p", 1.0, float, 0, 1)
    top_k = number_field(body, "top_k", 0, int, 0, vocab_size)
    seed = number_field(body, "seed", None, int, -(2**63), 2**63 - 1)
    for key in ("presence_penalty", "frequency_penalty"):
        if number_field(body, key, 0.0, float, -2, 2) != 0:
            raise bad(f"{key} is not supported (only 0)", key)
    if body.get("logit_bias"):
        raise bad("logit_bias is not supported", "logit_bias")
    if top_p == 0:
        temperature = 0.0  # the nucleus of p = 0 is the most likely token alone
        top_p = 1.0
    seed = seed if seed is not None else int.from_bytes(uuid.uuid4().bytes[:4], "little")
    return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed % 2**32)


def model_name(body: dict) -> str | None:
    name = body.get("model")
    if name is not None and not isinstance(name, str):
        raise bad("model must be a string", "model")
    return name


def parse_request(body: Any, vocab_size: int) -> CompletionRequest:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    model = model_name(body)
    messages = to_nanocode(body.get("messages"))
    tools = parse_tools(body.get("tools"))
    choice = parse_tool_choice(body.get("tool_choice"), tools)
    sampling = parse_sampling(body, vocab_size)
    max_tokens = number_field(body, "max_completion_tokens", None, int, 1, None)
    max_tokens = number_field(body, "max_tokens", max_tokens, int, 1, None)
    if number_field(body, "n", 1, int, 1, None) != 1:
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
    messages = show_tools(messages, tools, choice)
    include_usage = bool(options.get("include_usage"))
    return CompletionRequest(model, messages, sampling, max_tokens, stop, stream, include_usage, tools, choice)
