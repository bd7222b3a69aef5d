"""A scripted OpenAI-compatible teacher on 127.0.0.1 for tests: fixed bad and good rollouts, and failure modes."""

from __future__ import annotations

import json
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


class ScriptedTeacher:
    """`faults` is a list consumed one per request: None (answer), 'timeout', 'invalid_json', 'http500'."""

    def __init__(self, faults=None, timeout_sleep=1.5):
        self.faults = list(faults or [])
        self.timeout_sleep = timeout_sleep
        self.requests = 0
        self.lock = threading.Lock()
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with teacher.lock:
                    teacher.requests += 1
                    fault = teacher.faults.pop(0) if teacher.faults else None
                if fault == "timeout":
                    time.sleep(teacher.timeout_sleep)
                if fault == "http500":
                    self.send_response(500)
                    self.end_headers()
                    return
                content = "{not json" if fault == "invalid_json" else teacher.answer(body["messages"])
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, messages) -> str:
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
        return json.dumps({"messages": GOOD if "Revise it" in text else BAD})

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
