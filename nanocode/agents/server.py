"""An OpenAI-compatible HTTP server over one inference engine (standard library http.server, no other deps).

    POST /v1/chat/completions   messages, tools, stream (server-sent events), temperature, top_p, max_tokens, stop, seed
    GET  /v1/models             the one model served
    GET  /health                status and queue depth

Requests are parsed and checked by nanocode.agents.openai_request (how OpenAI messages map onto nanocode's format).
A tool call the model makes comes back as `tool_calls` (function name, JSON arguments) with finish_reason
"tool_calls".

Concurrency: HTTP handler threads parse and tokenise; one worker thread owns the engine and runs the requests from a
bounded queue in batches (1 row when one request waits, else `max_batch` rows, so only two batch shapes compile). A
full queue answers 503 at once. Every bad request gets a 4xx JSON error {"error": {"message", "type", ...}}; an
engine failure fails only its own batch (500) and the worker carries on.
"""

from __future__ import annotations

import collections
import json
import queue
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from nanocode.agents.chat_session import TurnDecoder, stop_ids
from nanocode.agents.openai_request import CompletionRequest, RequestError, bad, parse_request, typed_arguments
from nanocode.data.conversation import ConversationCodec, Message
from nanocode.models.engine import Engine
from nanocode.models.sampling import SamplingParams


# ---------------------------------------------------------------------------------------------------- the worker
@dataclass
class Job:
    """One request in flight: what to generate, and the events the handler thread waits on."""

    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int
    stop: list[str]
    events: queue.Queue = field(
        default_factory=queue.Queue
    )  # ('delta', str) ... then ('done', Result) | ('error', str)
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass
class Result:
    message: Message
    finish_reason: str  # 'stop' | 'length' | 'tool_calls'
    completion_tokens: int


class QueueFull(Exception):
    pass


class Worker:
    """The one thread that runs the engine: takes queued jobs in batches and streams their tokens back."""

    def __init__(self, engine: Engine, codec: ConversationCodec, *, max_batch: int = 8, max_queue: int = 64):
        self.engine, self.codec = engine, codec
        self.max_batch = max(1, max_batch)
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self.running = 0
        self.batch_rows: collections.Counter[int] = collections.Counter()  # requests per batch run -> count
        self._caches: dict[int, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nanocode-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull from None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = [self.queue.get(timeout=0.1)]
            except queue.Empty:
                continue
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            jobs = [j for j in jobs if not j.cancelled.is_set()]
            if not jobs:
                continue
            self.running = len(jobs)
            self.batch_rows[len(jobs)] += 1
            try:
                self._run(jobs)
            except Exception as e:  # fail this batch, keep serving
                self._caches.clear()  # its buffers may have been donated to a call that failed
                for job in jobs:
                    job.events.put(("error", f"{type(e).__name__}: {e}"))
            finally:
                self.running = 0

    def _run(self, jobs: list[Job]) -> None:
        b = 1 if len(jobs) == 1 else self.max_batch
        if b not in self._caches:
            self._caches[b] = self.engine.new_cache(b)
        cache = self._caches[b]
        cache.reset()
        pad = b - len(jobs)
        decoders = [TurnDecoder(self.codec, job.stop) for job in jobs]
        counts = [0] * len(jobs)
        gen = self.engine.generate(
            cache,
            [job.prompt for job in jobs] + [[]] * pad,
            [job.sampling for job in jobs] + [SamplingParams(temperature=0.0)] * pad,
            max_new_tokens=[job.max_tokens for job in jobs] + [0] * pad,
            stop_ids=stop_ids(self.codec),
        )
        try:
            column = next(gen, None)
            while column is not None:
                ended = []
                for r, job in enumerate(jobs):
                    if column[r] is None:
                        continue
                    counts[r] += 1
                    delta = decoders[r].push(column[r])
                    if delta:
                        job.events.put(("delta", delta))
                    if decoders[r].stopped_by_string or job.cancelled.is_set():
                        ended.append(r)
                try:
                    column = gen.send(ended)
                except StopIteration:
                    column = None
        finally:
            gen.close()
        for job, decoder, n in zip(jobs, decoders, counts):
            rest = decoder.flush()
            if rest:
                job.events.put(("delta", rest))
            if decoder.made_call:
                finish = "tool_calls"
            elif decoder.finish_token is not None or decoder.stopped_by_string:
                finish = "stop"
            else:
                finish = "length"
            job.events.put(("done", Result(decoder.message(), finish, n)))


# ---------------------------------------------------------------------------------------------------- HTTP
class _HTTPServer(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of clients connecting at once (20 agents starting
    # together) overflows it and the kernel resets the extra connections before any handler sees them.
    request_queue_size = 256
    daemon_threads = True


class CompletionServer:
    """The HTTP front: `start()` serves in a background thread (tests), `serve_forever()` blocks (the CLI)."""

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
        verbose: bool = False,
    ):
        self.engine, self.codec = engine, codec
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.max_body_bytes = max_body_bytes
        self.verbose = verbose
        self.created = int(time.time())
        self.worker = Worker(engine, codec, max_batch=max_batch, max_queue=max_queue)
        self.httpd = _HTTPServer((host, port), _Handler)
        self.httpd.app = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self, *, start_worker: bool = True) -> CompletionServer:
        """Serve in a background thread (start_worker=False: accept and queue requests but run none yet)."""
        if start_worker:
            self.worker.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="nanocode-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.worker.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()
        self.worker.stop()

    def __enter__(self) -> CompletionServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the endpoints' logic (the handler does the HTTP) -------------------------------------------------------
    def health(self) -> dict[str, Any]:
        w = self.worker
        return {
            "status": "ok",
            "model": self.model_name,
            "queued": w.queue.qsize(),
            "max_queue": w.queue.maxsize,
            "running": w.running,
            "max_batch": w.max_batch,
            "max_len": self.engine.max_len,
        }

    def models(self) -> dict[str, Any]:
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "nanocode"}
        return {"object": "list", "data": [model]}

    def submit(self, body: Any) -> tuple[CompletionRequest, Job]:
        request = parse_request(body)
        prompt = self.codec.render_prompt(request.messages)
        room = self.engine.max_len - len(prompt)
        if room < 1:
            raise RequestError(
                400,
                f"the conversation is {len(prompt)} tokens; this model's context is {self.engine.max_len} tokens",
                "invalid_request_error",
                "messages",
            )
        max_tokens = min(request.max_tokens or self.default_max_tokens, room)
        job = Job(prompt, request.sampling, max_tokens, request.stop)
        try:
            self.worker.submit(job)
        except QueueFull:
            raise RequestError(
                503, "server busy: the request queue is full, retry later", "server_overloaded"
            ) from None
        return request, job

    def choice_message(self, request: CompletionRequest, result: Result) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": result.message.get("content") or None}
        if "tool_call" in result.message:
            message["tool_calls"] = [self.tool_call(request, result.message["tool_call"])]
        if message["content"] is None and "tool_calls" not in message:
            message["content"] = ""
        return message

    def tool_call(self, request: CompletionRequest, call: Mapping[str, Any], index: int | None = None):
        args = typed_arguments(call.get("args") or {}, request.tools.get(call["name"]))
        out = {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": call["name"], "arguments": json.dumps(args)},
        }
        return out if index is None else {"index": index, **out}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nanocode"

    @property
    def app(self) -> CompletionServer:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:
        if self.app.verbose:
            super().log_message(format, *args)

    # -- plumbing ---------------------------------------------------------------------------------------------------
    def _send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, err: RequestError) -> None:
        self._send_json(err.status, err.body())

    def _read_json(self) -> Any:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise RequestError(411, "chunked request bodies are not supported: send Content-Length")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            raise RequestError(411, "a Content-Length header is required") from None
        if length < 0 or length > self.app.max_body_bytes:
            self.close_connection = True
            left = length if length <= 16 * self.app.max_body_bytes else 0
            while left > 0:  # read it away, so the client gets to see the answer
                left -= len(self.rfile.read(min(left, 1 << 20)) or b"\0" * left)
            raise RequestError(413, f"request body of {length} bytes exceeds {self.app.max_body_bytes}")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except ValueError as e:
            raise bad(f"the request body is not valid JSON ({e})") from None

    # -- methods ----------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        if path == "/health":
            self._send_json(200, self.app.health())
        elif path == "/v1/models":
            self._send_json(200, self.app.models())
        elif path == f"/v1/models/{self.app.model_name}":
            self._send_json(200, self.app.models()["data"][0])
        else:
            self._send_error(RequestError(404, f"no such endpoint: GET {path}", "not_found_error"))

    def do_POST(self) -> None:
        path = self.path.split("?")[0].rstrip("/")
        try:
            if path != "/v1/chat/completions":
                self.close_connection = True
                raise RequestError(404, f"no such endpoint: POST {path}", "not_found_error")
            request, job = self.app.submit(self._read_json())
        except RequestError as e:
            self._send_error(e)
            return
        except ValueError as e:  # SamplingParams and friends
            self._send_error(bad(str(e)))
            return
        if request.stream:
            self._stream(request, job)
        else:
            self._complete(request, job)

    def _method_not_allowed(self) -> None:
        self.close_connection = True
        self._send_error(RequestError(405, f"method {self.command} is not allowed", "invalid_request_error"))

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    # -- responses --------------------------------------------------------------------------------------------------
    def _envelope(self, completion_id: str, created: int, kind: str) -> dict[str, Any]:
        return {"id": completion_id, "object": kind, "created": created, "model": self.app.model_name}

    def _complete(self, request: CompletionRequest, job: Job) -> None:
        while True:
            kind, payload = job.events.get()
            if kind == "done":
                break
            if kind == "error":
                self._send_error(RequestError(500, f"generation failed: {payload}", "server_error"))
                return
        result: Result = payload
        prompt_tokens = len(job.prompt)
        body = self._envelope(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), "chat.completion")
        body["choices"] = [
            {
                "index": 0,
                "message": self.app.choice_message(request, result),
                "logprobs": None,
                "finish_reason": result.finish_reason,
            }
        ]
        body["usage"] = _usage(prompt_tokens, result.completion_tokens)
        self._send_json(200, body)

    def _stream(self, request: CompletionRequest, job: Job) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")  # the stream ends when the connection does
        self.end_headers()
        self.close_connection = True
        base = self._envelope(f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time()), "chat.completion.chunk")

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {**base, "choices": [choice], **extra}

        try:
            self._event(chunk({"role": "assistant", "content": ""}))
            while True:
                kind, payload = job.events.get()
                if kind == "delta":
                    self._event(chunk({"content": payload}))
                elif kind == "error":
                    self._event(RequestError(500, f"generation failed: {payload}", "server_error").body())
                    break
                else:
                    result: Result = payload
                    if "tool_call" in result.message:
                        call = self.app.tool_call(request, result.message["tool_call"], index=0)
                        self._event(chunk({"tool_calls": [call]}))
                    self._event(chunk({}, result.finish_reason))
                    if request.include_usage:
                        usage = _usage(len(job.prompt), result.completion_tokens)
                        self._event({**base, "choices": [], "usage": usage})
                    break
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            job.cancelled.set()  # the client left: the worker stops generating for it

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
