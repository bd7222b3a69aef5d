"""The Responses API (`POST /v1/responses`, `GET /v1/responses/{id}`) over the same engine and reply rules as chat.

A request's `input` (a string, or items: messages, `function_call`, `function_call_output`) becomes chat messages,
after the stored conversation of `previous_response_id` when one is given, with `instructions` as the system text
(instructions are not carried over from the previous response, as OpenAI does). Tools are flat function tools
(`{"type": "function", "name", "parameters"}`); tool_choice, sampling and the tool-call rules are chat's.

Responses are kept (unless `store` is false) in a bounded in-memory store, the `store_size` most recent ones: enough
for an agent to chain its turns by id; an evicted or unknown id is a clear 400/404.

Streaming sends the events the official client parses, each with a `sequence_number`: response.created,
response.in_progress, then per output item response.output_item.added, (message) response.content_part.added,
response.output_text.delta..., response.output_text.done, response.content_part.done, (call)
response.function_call_arguments.delta, response.function_call_arguments.done, then response.output_item.done, and
last response.completed (response.incomplete when the token budget ran out).
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nanocode.agents.api_errors import RequestError, bad
from nanocode.agents.http_front import HttpRequest, HttpResponse, read_json, sse
from nanocode.agents.openai_request import model_name, number_field, parse_sampling, to_nanocode
from nanocode.agents.serving_worker import Job, Reply
from nanocode.agents.tool_schema import FunctionTool, ToolChoice, parse_tool_choice, parse_tools, show_tools
from nanocode.models.sampling import SamplingParams

if TYPE_CHECKING:
    from nanocode.agents.server import CompletionServer


class ResponseStore:
    """The last `size` responses by id, each with its whole conversation (chat messages, no instructions)."""

    def __init__(self, size: int):
        self.size = size
        self._items: collections.OrderedDict[str, tuple[dict, list[dict]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def put(self, response: dict[str, Any], conversation: list[dict[str, Any]]) -> None:
        with self._lock:
            self._items[response["id"]] = (response, conversation)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, response_id: str) -> tuple[dict, list[dict]] | None:
        with self._lock:
            item = self._items.get(response_id)
            if item is not None:
                self._items.move_to_end(response_id)
            return item


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise bad(f"{where}.content must be a string or a list of text parts", "input")
    parts = []
    for part in content:
        if not (isinstance(part, dict) and part.get("type") in ("input_text", "output_text", "text")):
            raise bad(f"{where}: only text content parts are supported", "input")
        parts.append(str(part.get("text") or ""))
    return "".join(parts)


def input_messages(value: Any) -> list[dict[str, Any]]:
    """`input` -> chat messages (function_call items join the assistant message before them)."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise bad("input must be a string or a non-empty list of items", "input")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad(f"{where} must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            if item.get("role") not in ("user", "assistant", "system", "developer"):
                raise bad(f"{where}: unknown role {item.get('role')!r}", "input")
            out.append({"role": item["role"], "content": _text(item.get("content"), where)})
        elif kind == "function_call":
            if not (isinstance(item.get("call_id"), str) and isinstance(item.get("name"), str)):
                raise bad(f"{where}: a function_call needs call_id and name", "input")
            function = {"name": item["name"], "arguments": item.get("arguments") or "{}"}
            call = {"id": item["call_id"], "type": "function", "function": function}
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise bad(f"{where}: a function_call_output needs the call_id it answers", "input")
            out.append({"role": "tool", "tool_call_id": item["call_id"], "content": _text(item.get("output"), where)})
        else:
            raise bad(f"{where}: item type {kind!r} is not supported (message, function_call, function_call_output)")
    return out


@dataclass
class ResponsesRequest:
    body: dict[str, Any]
    conversation: list[dict[str, Any]]  # chat messages: the previous response's conversation, then this input
    instructions: str | None
    tools: dict[str, FunctionTool]
    choice: ToolChoice
    sampling: SamplingParams
    max_output_tokens: int | None
    stream: bool
    store: bool
    previous_response_id: str | None
    extra: dict[str, Any] = field(default_factory=dict)


class ResponsesEndpoint:
    def __init__(self, server: CompletionServer, store_size: int = 256):
        self.server = server
        self.store = ResponseStore(store_size)

    def retrieve(self, http: HttpRequest) -> HttpResponse:
        response_id = http.path.rstrip("/").rsplit("/", 1)[1]
        stored = self.store.get(response_id)
        if stored is None:
            raise RequestError(404, f"no stored response with id {response_id!r}", code="response_not_found")
        return HttpResponse.json(200, stored[0])

    def parse(self, body: Any) -> ResponsesRequest:
        if not isinstance(body, dict):
            raise bad("the request body must be a JSON object")
        self.server.check_model(model_name(body))
        previous = body.get("previous_response_id")
        conversation: list[dict[str, Any]] = []
        if previous is not None:
            stored = self.store.get(previous) if isinstance(previous, str) else None
            if stored is None:
                raise bad(f"no stored response with id {previous!r}", "previous_response_id", "response_not_found")
            conversation = list(stored[1])
        conversation += input_messages(body.get("input"))
        instructions = body.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise bad("instructions must be a string", "instructions")
        tools = parse_tools(body.get("tools"), nested=False)
        choice = parse_tool_choice(body.get("tool_choice"), tools)
        fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
        if fmt not in (None, {"type": "text"}):
            raise bad("only text output is supported (text.format {'type': 'text'})", "text")
        if body.get("background"):
            raise bad("background responses are not supported", "background")
        for key in ("stream", "store", "parallel_tool_calls"):
            if body.get(key) is not None and not isinstance(body[key], bool):
                raise bad(f"{key} must be a boolean", key)
        return ResponsesRequest(
            body,
            conversation,
            instructions,
            tools,
            choice,
            parse_sampling(body, self.server.engine.config.vocab_size),
            number_field(body, "max_output_tokens", None, int, 1, None),
            bool(body.get("stream")),
            body.get("store", True) is not False,
            previous,
        )

    def create(self, http: HttpRequest) -> HttpResponse:
        request = self.parse(read_json(http))
        system = [{"role": "system", "content": request.instructions}] if request.instructions else []
        messages = show_tools(to_nanocode(system + request.conversation), request.tools, request.choice)
        job = self.server.submit(
            messages, request.sampling, request.max_output_tokens, [], request.choice, http, "max_output_tokens"
        )
        run = _Run(self, request, job)
        if request.stream:
            return HttpResponse(200, run.events(), "text/event-stream")
        return HttpResponse.json(200, run.finish(self.server.wait(job)))


class _Run:
    """One response being made: its ids, its output items, and how it is reported."""

    def __init__(self, endpoint: ResponsesEndpoint, request: ResponsesRequest, job: Job):
        self.endpoint, self.request, self.job = endpoint, request, job
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created = time.time()
        self.sequence = 0

    def response(self, status: str, output: list[dict], usage: dict | None = None) -> dict[str, Any]:
        r, choice = self.request, self.request.choice
        tool_choice = {"type": "function", "name": choice.name} if choice.mode == "function" else choice.mode
        tools = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "strict": False,
            }
            for t in r.tools.values()
        ]
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "metadata": r.body.get("metadata") if isinstance(r.body.get("metadata"), dict) else {},
            "model": self.endpoint.server.model_name,
            "output": output,
            "parallel_tool_calls": r.body.get("parallel_tool_calls", True) is not False,
            "previous_response_id": r.previous_response_id,
            "store": r.store,
            "temperature": r.sampling.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": tool_choice,
            "tools": tools,
            "top_p": r.sampling.top_p,
            "truncation": "disabled",
            "usage": usage,
        }

    def message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        content = [_part(text)] if status == "completed" else []
        return {"type": "message", "id": self.message_id, "status": status, "role": "assistant", "content": content}

    @staticmethod
    def call_item(reply: Reply, call_id: str, item_id: str, status: str = "completed") -> dict[str, Any]:
        arguments = _json(reply.arguments) if status == "completed" else ""
        return {"type": "function_call", "id": item_id, "call_id": call_id, "name": reply.name,
                "arguments": arguments, "status": status}  # fmt: skip

    def finish(self, result, call_ids: tuple[str, str] | None = None) -> dict[str, Any]:
        """The completed response object (stored when asked) for the worker's result."""
        reply = result.settle(self.request.tools, self.request.choice)
        call_id, item_id = call_ids or (f"call_{uuid.uuid4().hex[:24]}", f"fc_{uuid.uuid4().hex}")
        output = [self.message_item(reply.content)] if reply.content or reply.name is None else []
        if reply.name is not None:
            output.append(self.call_item(reply, call_id, item_id))
        status = "incomplete" if reply.finish_reason == "length" else "completed"
        prompt, completion = len(self.job.prompt), result.completion_tokens
        usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        response = self.response(status, output, usage)
        if self.request.store:
            said: dict[str, Any] = {"role": "assistant", "content": reply.content}
            if reply.name is not None:
                function = {"name": reply.name, "arguments": _json(reply.arguments)}
                said["tool_calls"] = [{"id": call_id, "type": "function", "function": function}]
            self.endpoint.store.put(response, [*self.request.conversation, said])
        return response

    # -- streaming ----------------------------------------------------------------------------------------------
    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return sse(payload, kind)

    def events(self) -> Iterator[bytes]:
        yield self.event("response.created", response=self.response("in_progress", []))
        yield self.event("response.in_progress", response=self.response("in_progress", []))
        text_open = False
        where = {"item_id": self.message_id, "output_index": 0, "content_index": 0}

        def open_text() -> Iterator[bytes]:
            yield self.event("response.output_item.added", output_index=0, item=self.message_item("", "in_progress"))
            yield self.event("response.content_part.added", part=_part(""), **where)

        while True:
            kind, payload = self.job.events.get()
            if kind == "delta":
                if not text_open:
                    yield from open_text()
                    text_open = True
                yield self.event("response.output_text.delta", delta=payload, logprobs=[], **where)
            elif kind == "error":
                failed = self.response("failed", [])
                failed["error"] = {"code": "server_error", "message": f"generation failed: {payload}"}
                yield self.event("response.failed", response=failed)
                return
            else:
                break
        result = payload
        reply = result.settle(self.request.tools, self.request.choice)
        call_ids = (f"call_{uuid.uuid4().hex[:24]}", f"fc_{uuid.uuid4().hex}")
        if reply.content or reply.name is None:
            if not text_open:
                yield from open_text()
            if reply.extra:
                yield self.event("response.output_text.delta", delta=reply.extra, logprobs=[], **where)
            yield self.event("response.output_text.done", text=reply.content, logprobs=[], **where)
            yield self.event("response.content_part.done", part=_part(reply.content), **where)
            yield self.event("response.output_item.done", output_index=0, item=self.message_item(reply.content))
        if reply.name is not None:
            index = 1 if (reply.content or text_open) else 0
            arguments = _json(reply.arguments)
            added = self.call_item(reply, *call_ids, status="in_progress")
            yield self.event("response.output_item.added", output_index=index, item=added)
            at = {"item_id": call_ids[1], "output_index": index}
            yield self.event("response.function_call_arguments.delta", delta=arguments, **at)
            yield self.event("response.function_call_arguments.done", arguments=arguments, name=reply.name, **at)
            yield self.event("response.output_item.done", output_index=index, item=self.call_item(reply, *call_ids))
        response = self.finish(result, call_ids)
        done = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        yield self.event(done, response=response)


def _part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _json(value: Any) -> str:
    return json.dumps(value)
