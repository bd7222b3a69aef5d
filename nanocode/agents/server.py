"""An OpenAI-compatible HTTP server over one inference engine.

    POST /v1/chat/completions   messages, tools, tool_choice, stream (server-sent events), sampling, max_tokens, stop
    POST /v1/responses          the Responses API (responses_api.py); GET /v1/responses/{id}
    GET  /v1/models             the one model served; GET /v1/models/{id}
    GET  /health                status and queue depth (no key needed)
    GET  /                      the web chat page (web_chat.py; no key needed, its API calls carry the key)
    OPTIONS, HEAD               answered in JSON for every path

The contract a client can rely on:
- The request's tools are shown to the model in its training format (tool_schema.py); a call comes back as a tool
  call only if the client declared the tool, tool_choice allows it and the arguments satisfy the schema. Any other
  call is returned as text with finish_reason "stop", so "tool_calls" always comes with a call.
- No special token of the tokenizer ever appears in content or arguments, streamed or not (reply_decoder.py).
- A model name other than the one served is 404 `model_not_found`; max_tokens beyond the context is 400; every
  error is OpenAI's {"error": {"message", "type", "param", "code"}} (api_errors.py).
- With an api key (`--api-key` / NANOCODE_API_KEY) every /v1 path needs `Authorization: Bearer <key>` (401 else).

Concurrency: connections are coroutines, handlers run on a bounded thread pool (http_front.py: timeouts, body cap,
connection cap); one worker thread owns the engine and runs requests in batches (serving_worker.py). A full queue
answers 503 at once; a client that hangs up has its generation cancelled.

The routes are one table (`self.routes`), so a page (`GET /`) is one more entry.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from nanocode.agents.api_errors import RequestError, bad
from nanocode.agents.http_front import HttpFront, HttpRequest, HttpResponse, read_json, sse
from nanocode.agents.openai_request import CompletionRequest, parse_request
from nanocode.agents.responses_api import ResponsesEndpoint
from nanocode.agents.serving_worker import Job, QueueFull, Reply, Result, Worker
from nanocode.agents.tool_schema import ToolChoice, forced_prefix
from nanocode.agents.web_chat import chat_page
from nanocode.data.conversation import ConversationCodec, Message
from nanocode.models.engine import Engine
from nanocode.models.sampling import SamplingParams

PUBLIC_PATHS = ("/health", "/")  # answered without the api key

Route = Callable[[HttpRequest], HttpResponse]


class CompletionServer:
    """The app: `start()` serves in a background thread (tests), `serve_forever()` blocks (the CLI)."""

    def __init__(
        self,
        engine: Engine,
        codec: ConversationCodec,
        *,
        model_name: str = "nanocode",
        host: str = "127.0.0.1",
        port: int = 8000,
        max_batch: int = 8,
        max_queue: int = 64,
        default_max_tokens: int = 512,
        max_body_bytes: int = 4 << 20,
        api_key: str | None = None,
        store_size: int = 256,
        verbose: bool = False,
        **front_limits: Any,  # max_connections, idle_timeout, request_timeout, write_timeout (http_front.py)
    ):
        self.engine, self.codec = engine, codec
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.api_key = api_key.encode() if api_key else None
        self.created = int(time.time())
        self.worker = Worker(engine, codec, max_batch=max_batch, max_queue=max_queue)
        self.responses = ResponsesEndpoint(self, store_size=store_size)
        self.routes: dict[str, dict[str, Route]] = {
            "/": {"GET": lambda r: chat_page()},
            "/health": {"GET": lambda r: HttpResponse.json(200, self.health())},
            "/v1/models": {"GET": lambda r: HttpResponse.json(200, self.models())},
            f"/v1/models/{model_name}": {"GET": lambda r: HttpResponse.json(200, self.models()["data"][0])},
            "/v1/chat/completions": {"POST": self.chat_completions},
            "/v1/responses": {"POST": self.responses.create},
        }
        # Every queued or running request may hold one handler thread while it waits for its tokens.
        pool = max_queue + max_batch + 8
        self.front = HttpFront(
            self.handle, host, port, pool_size=pool, max_body_bytes=max_body_bytes, verbose=verbose, **front_limits
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.front.address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self, *, start_worker: bool = True) -> CompletionServer:
        """Serve in a background thread (start_worker=False: accept and queue requests but run none yet)."""
        if start_worker:
            self.worker.start()
        self.front.start()
        return self

    def serve_forever(self) -> None:
        self.worker.start()
        try:
            self.front.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        self.front.close()
        self.worker.stop()

    def __enter__(self) -> CompletionServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- dispatch ---------------------------------------------------------------------------------------------------
    def route(self, path: str) -> dict[str, Route] | None:
        path = path.rstrip("/") or "/"
        if path.startswith("/v1/responses/") and path.count("/") == 3:
            return {"GET": self.responses.retrieve}
        return self.routes.get(path)

    def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            methods = self.route(request.path)
            if methods is None:
                raise RequestError(404, f"no such endpoint: {request.method} {request.path}", code="unknown_url")
            allow = ", ".join([*methods, *(["HEAD"] if "GET" in methods else []), "OPTIONS"])
            if request.method == "OPTIONS":
                return HttpResponse.json(200, {"path": request.path, "methods": allow.split(", ")}, [("Allow", allow)])
            method = "GET" if request.method == "HEAD" else request.method
            if method not in methods:
                err = RequestError(405, f"method {request.method} is not allowed on {request.path} (allowed: {allow})")
                return HttpResponse.json(405, err.body(), [("Allow", allow)])
            if request.path not in PUBLIC_PATHS:
                self.authorize(request)
            return methods[method](request)
        except RequestError as e:
            return HttpResponse.error(e)

    def authorize(self, request: HttpRequest) -> None:
        if self.api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.api_key)):
            raise RequestError(401, "missing or wrong api key (Authorization: Bearer <key>)", "authentication_error")

    # -- shared by the endpoints --------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        w = self.worker
        return {
            "status": "ok",
            "model": self.model_name,
            "queued": w.queue.qsize(),
            "max_queue": w.queue.maxsize,
            "running": w.running,
            "cancelled": w.cancelled,
            "max_batch": w.max_batch,
            "max_len": self.engine.max_len,
            "connections": self.front.open_connections,
        }

    def models(self) -> dict[str, Any]:
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "nanocode"}
        return {"object": "list", "data": [model]}

    def check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise RequestError(
                404, f"the model {name!r} does not exist (served: {self.model_name!r})", param="model",
                code="model_not_found",
            )  # fmt: skip

    def submit(
        self,
        messages: list[Message],
        sampling: SamplingParams,
        max_tokens: int | None,
        stop: list[str],
        choice: ToolChoice,
        request: HttpRequest,
        max_tokens_field: str = "max_tokens",
    ) -> Job:
        """Render, check the budget and queue one generation (cancelled when the client of `request` leaves)."""
        prefix = forced_prefix(self.codec, choice)
        prompt = self.codec.render_prompt(messages) + prefix
        room = self.engine.max_len - len(prompt)
        if room < 1:
            raise bad(
                f"the conversation is {len(prompt)} tokens; this model's context is {self.engine.max_len} tokens",
                "messages", "context_length_exceeded",
            )  # fmt: skip
        if max_tokens is not None and max_tokens > room:
            raise bad(
                f"{max_tokens_field} = {max_tokens} does not fit: the context is {self.engine.max_len} tokens and the "
                f"prompt takes {len(prompt)}, leaving {room}", max_tokens_field, "context_length_exceeded",
            )  # fmt: skip
        budget = max_tokens if max_tokens is not None else min(self.default_max_tokens, room)
        job = Job(prompt, sampling, budget, stop, prefix, cancelled=request.disconnected)
        try:
            self.worker.submit(job)
        except QueueFull:
            raise RequestError(
                503, "server busy: the request queue is full, retry later", "server_overloaded"
            ) from None
        return job

    @staticmethod
    def wait(job: Job) -> Result:
        while True:
            kind, payload = job.events.get()
            if kind == "done":
                return payload
            if kind == "error":
                raise RequestError(500, f"generation failed: {payload}", "server_error")

    # -- chat completions ---------------------------------------------------------------------------------------------
    def chat_completions(self, http: HttpRequest) -> HttpResponse:
        request = parse_request(read_json(http), self.engine.config.vocab_size)
        self.check_model(request.model)
        job = self.submit(
            request.messages, request.sampling, request.max_tokens, request.stop, request.tool_choice, http
        )
        envelope = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": self.model_name}
        if request.stream:
            return HttpResponse(200, self._chat_stream(request, job, envelope), "text/event-stream")
        result = self.wait(job)
        reply = result.settle(request.tools, request.tool_choice)
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.name is not None:
            message["content"] = reply.content or None
            message["tool_calls"] = [_tool_call(reply)]
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reply.finish_reason}
        body = {**envelope, "object": "chat.completion", "choices": [choice]}
        body["usage"] = _usage(len(job.prompt), result.completion_tokens)
        return HttpResponse.json(200, body)

    def _chat_stream(self, request: CompletionRequest, job: Job, envelope: dict[str, Any]) -> Iterator[bytes]:
        base = {**envelope, "object": "chat.completion.chunk"}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**base, "choices": [choice]})

        yield chunk({"role": "assistant", "content": ""})
        while True:
            kind, payload = job.events.get()
            if kind == "delta":
                yield chunk({"content": payload})
            elif kind == "error":
                yield sse(RequestError(500, f"generation failed: {payload}", "server_error").body())
                break
            else:
                reply: Reply = payload.settle(request.tools, request.tool_choice)
                if reply.extra:
                    yield chunk({"content": reply.extra})
                if reply.name is not None:
                    yield chunk({"tool_calls": [{"index": 0, **_tool_call(reply)}]})
                yield chunk({}, reply.finish_reason)
                if request.include_usage:
                    yield sse({**base, "choices": [], "usage": _usage(len(job.prompt), payload.completion_tokens)})
                break
        yield b"data: [DONE]\n\n"


def _tool_call(reply: Reply) -> dict[str, Any]:
    function = {"name": reply.name, "arguments": json.dumps(reply.arguments)}
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": function}


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
