"""A policy behind an OpenAI-compatible chat-completions endpoint: `nanocode serve`, vLLM, llama-server, a hosted API.

The conversation goes out in OpenAI's format (system, user, assistant with `tool_calls`, `tool` results answering
them by id) and the reply's first tool call comes back as nanocode's one call per turn. The model is shown its tools
the nanocode way, in the system prompt that `rollouts.run_episode` puts first; servers that want the OpenAI `tools`
list get it from `tools=` (each tool's `openai_schema()`).

The HTTP side (retries with backoff on timeouts, 429/5xx and unusable replies, rate limit, thread safety) is the
teacher client's: one implementation of talking to a served model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from nanocode.agents.policy import Policy
from nanocode.agents.tools import Tool
from nanocode.align.teacher import OpenAICompatibleTeacher
from nanocode.data.conversation import Message


def to_openai(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """nanocode messages -> OpenAI chat messages; each tool_result answers the call of the assistant turn before it."""
    out: list[dict[str, Any]] = []
    calls = 0
    for m in messages:
        role = m["role"]
        if role == "tool_result":
            out.append({"role": "tool", "tool_call_id": f"call_{calls}", "content": m["content"]})
        elif role == "assistant" and m.get("tool_call"):
            calls += 1
            call = m["tool_call"]
            function = {"name": call["name"], "arguments": json.dumps(call["args"])}
            message = {"role": "assistant", "content": m.get("content") or None}
            out.append({**message, "tool_calls": [{"id": f"call_{calls}", "type": "function", "function": function}]})
        else:
            out.append({"role": role, "content": m.get("content") or ""})
    return out


def from_openai(message: Mapping[str, Any]) -> Message:
    """An OpenAI reply message -> one nanocode assistant message (its first tool call; arguments as strings)."""
    out: Message = {"role": "assistant", "content": str(message.get("content") or "")}
    calls = message.get("tool_calls") or []
    if not calls:
        return out
    first = calls[0] if isinstance(calls[0], Mapping) else {}
    function = first.get("function") if isinstance(first.get("function"), Mapping) else {}
    try:
        args = json.loads(function.get("arguments") or "{}")
    except (TypeError, ValueError):
        args = None
    if not isinstance(function.get("name"), str) or not isinstance(args, dict):
        out["tool_call_error"] = f"the server returned an unreadable tool call: {json.dumps(calls[0])[:200]}"
        return out
    out["tool_call"] = {
        "name": function["name"],
        "args": {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in args.items()},
    }
    return out


class ServedPolicy(Policy):
    """The model behind an OpenAI-compatible endpoint, acting as the agent (greedy by default)."""

    name = "served"

    def __init__(
        self,
        client: OpenAICompatibleTeacher,
        *,
        temperature: float = 0.0,
        max_tokens: int = 512,
        tools: Mapping[str, Tool] | None = None,
    ):
        self.client, self.temperature, self.max_tokens = client, temperature, max_tokens
        self.tools = [tool.openai_schema() for tool in tools.values()] if tools else None

    def act(self, messages: Sequence[Message]) -> Message:
        payload: dict[str, Any] = {
            "model": self.client.model,
            "messages": to_openai(messages),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        if self.tools:
            payload["tools"] = self.tools
        return from_openai(self.client.chat(payload))
