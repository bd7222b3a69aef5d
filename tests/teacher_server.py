"""A scripted OpenAI-compatible teacher on 127.0.0.1 for tests: fixed bad and good rollouts, and failure modes.

It answers /v1/chat/completions and /v1/responses. Failure modes: a list of `faults` consumed one per request, and a
rate-limited window (`rate_limited_for_s` from the first request: 429 with `Retry-After`). Run it by hand, e.g. for
a synth run against a teacher that rate-limits for a minute:

    python -m tests.teacher_server --port 8123 --rate_limited_for_s 60
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BAD = [
    {"role": "user", "content": "fix the bug in calc.py"},
    {
        "role": "assistant",
        "content": "i'll fix it.",
        "tool_call": {"name": "Edit", "args": {"file_path": "calc.py", "old_string": "n - 1", "new_string": "n"}},
    },
    {"role": "tool_result", "content": "calc.py\n    1→def f(n):\n    2→    return n"},
    {"role": "assistant", "content": "done. anything else you'd like me to change?"},
]
GOOD = [
    {"role": "user", "content": "fix the bug in calc.py"},
    {
        "role": "assistant",
        "content": "reading calc.py first.",
        "tool_call": {"name": "Read", "args": {"file_path": "calc.py"}},
    },
    {"role": "tool_result", "content": "    1→def f(n):\n    2→    return n - 1"},
    {
        "role": "assistant",
        "content": "the off-by-one is on line 2.",
        "tool_call": {"name": "Edit", "args": {"file_path": "calc.py", "old_string": "n - 1", "new_string": "n"}},
    },
    {"role": "tool_result", "content": "calc.py\n    1→def f(n):\n    2→    return n"},
    {
        "role": "assistant",
        "content": "checking it.",
        "tool_call": {"name": "Bash", "args": {"command": "python -c 'import calc; print(calc.f(3))'"}},
    },
    {"role": "tool_result", "content": "3"},
    {"role": "assistant", "content": "fixed — f(3) returns 3 now."},
]


FAULTS = ("timeout", "invalid_json", "http500", "http429", "drop", "malformed")


def estimated_tokens(text: str) -> int:
    """The usage the server reports: about four characters a token (English and JSON under GPT-style BPEs)."""
    return max(1, len(text) // 4)


class ScriptedTeacher:
    """`faults` is a list consumed one per request: None (answer), 'timeout' (answer after `timeout_sleep`),
    'invalid_json' (a reply whose text is not JSON), 'http500', 'http429' (with `Retry-After: retry_after`),
    'drop' (the connection closes halfway through the body), 'malformed' (a 200 whose body is not JSON).
    `rate_limited_for_s`: every request answers 429 + Retry-After for that long after the first one.
    `delay_s`: every answer takes that long (a slow teacher). `bodies` keeps each request's (path, JSON body)."""

    def __init__(
        self,
        faults=None,
        timeout_sleep=1.5,
        *,
        rate_limited_for_s: float = 0.0,
        retry_after: str = "1",
        delay_s: float = 0.0,
        port: int = 0,
    ):
        self.faults = list(faults or [])
        self.timeout_sleep, self.rate_limited_for_s, self.retry_after = timeout_sleep, rate_limited_for_s, retry_after
        self.delay_s = delay_s
        self.requests = 0
        self.rate_limited = 0
        self.first_request_at: float | None = None
        self.bodies: list[tuple[str, dict]] = []
        self.connections: set[socket.socket] = set()  # kept-alive ones, closed on exit as a stopped server's are
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers: a dropped connection is mid-stream

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                with teacher.lock:
                    teacher.connections.add(self.connection)

            def finish(self):
                super().finish()
                with teacher.lock:
                    teacher.connections.discard(self.connection)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with teacher.lock:
                    teacher.requests += 1
                    now = time.monotonic()
                    teacher.first_request_at = teacher.first_request_at or now
                    limited = now - teacher.first_request_at < teacher.rate_limited_for_s
                    fault = None if limited else (teacher.faults.pop(0) if teacher.faults else None)
                    teacher.rate_limited += limited or fault == "http429"
                    teacher.bodies.append((self.path, body))
                if self.path not in ("/v1/chat/completions", "/v1/responses"):
                    return self.reply(404, b'{"error": {"message": "no such endpoint"}}')
                if limited or fault == "http429":
                    error = b'{"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}'
                    return self.reply(429, error, {"Retry-After": teacher.retry_after})
                if fault == "http500":
                    return self.reply(500, b'{"error": {"message": "internal error"}}')
                time.sleep(teacher.timeout_sleep if fault == "timeout" else teacher.delay_s)
                if fault == "malformed":
                    return self.reply(200, b"<html>502 bad gateway</html>")
                content = "{not json" if fault == "invalid_json" else teacher.answer(self.path, body)
                data = teacher.envelope(self.path, body, content)
                if fault == "drop":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.reply(200, data)

            def reply(self, status: int, data: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def envelope(self, path: str, request: dict, content: str) -> bytes:
        prompt = json.dumps(request.get("messages") or request.get("input"))
        tokens_in, tokens_out = estimated_tokens(prompt), estimated_tokens(content)
        if path == "/v1/responses":
            message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": content}]}
            reply = {"object": "response", "status": "completed", "output": [message]}
            reply["usage"] = {"input_tokens": tokens_in, "output_tokens": tokens_out}
        else:
            reply = {"object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": content}}]}
            reply["usage"] = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out}
        return json.dumps(reply).encode()

    def answer(self, path: str, request: dict) -> str:
        messages = request["input"] if path == "/v1/responses" else request["messages"]
        text = messages[-1]["content"]
        if text.startswith("Rate this rollout"):
            good = '"fixed — f(3)' in text or "fixed \\u2014 f(3)" in text
            return json.dumps(
                {
                    "score": 9 if good else 4,
                    "critique": "fine" if good else "ends with an offer",
                    "principles_violated": [] if good else ["no-follow-up-offers"],
                }
            )
        if text.startswith("Rewrite each assistant"):
            prose = json.loads(text[text.index("\n") + 1 :])
            return json.dumps({"assistant": [p.lower().replace("!", ".") for p in prose]})
        if text.startswith("Write ") and "realistic requests" in text:  # scenario requests
            return json.dumps({"scenarios": [{"prompt": f"fix the bug in calc{i}.py"} for i in range(3)]})
        return json.dumps({"messages": GOOD if "Revise it" in text else BAD})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        with self.lock:
            for connection in self.connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--rate_limited_for_s", type=float, default=0.0)
    parser.add_argument("--retry_after", default="5")
    parser.add_argument("--delay_s", type=float, default=0.0)
    args = parser.parse_args()
    server = ScriptedTeacher(
        rate_limited_for_s=args.rate_limited_for_s, retry_after=args.retry_after, delay_s=args.delay_s, port=args.port
    )
    print(f"scripted teacher at {server.url}", flush=True)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
