"""Teachers: the models that write synthetic rollouts, critiques and revisions.

`OpenAICompatibleTeacher` speaks the OpenAI chat-completions API, so any llama-server, vLLM, hosted API or
nanocode's own `nanocode serve` can teach. It retries with exponential backoff on timeouts, connection errors,
429/5xx and replies that are not the JSON asked for; it rate-limits and is safe to call from many threads.
A teacher that keeps failing raises `TeacherError` (one line), which the pipeline counts as a failure.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from nanocode.core.errors import NanocodeError
from nanocode.core.kinds import TEACHERS

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class TeacherError(NanocodeError):
    """The teacher could not produce a usable answer after its retries."""


class Teacher:
    """Turns chat messages into text (or a JSON object, when a schema is given)."""

    def complete(
        self, messages: list[dict], *, schema: dict | None = None, temperature: float = 0.7, max_tokens: int = 2048
    ) -> str:
        raise NotImplementedError

    def complete_json(self, messages: list[dict], schema: dict, **kw) -> dict:
        """complete() and parse the reply as a JSON object (the teacher retries replies that do not parse)."""
        return parse_json_object(self.complete(messages, schema=schema, **kw))


def parse_json_object(text: str) -> dict:
    """Parse a JSON object from a reply, tolerating ``` fences and text around the object."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("reply holds no JSON object")
    obj = json.loads(text[start : end + 1])
    if not isinstance(obj, dict):
        raise ValueError("reply JSON is not an object")
    return obj


class _RateLimiter:
    """At most `per_minute` requests a minute across threads (evenly spaced)."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            at = max(now, self.next_at)
            self.next_at = at + self.interval
        time.sleep(max(0.0, at - now))


@TEACHERS.register("openai_compatible")
class OpenAICompatibleTeacher(Teacher):
    """A teacher behind an OpenAI-compatible /chat/completions endpoint (API key read from an env variable)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "default",
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 120.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        requests_per_minute: float | None = None,
        json_schema: bool = True,
    ):
        self.base_url, self.model, self.api_key_env = base_url.rstrip("/"), model, api_key_env
        self.timeout_s, self.retries, self.backoff_s, self.max_backoff_s = timeout_s, retries, backoff_s, max_backoff_s
        self.json_schema = json_schema  # ask for JSON-schema constrained output (servers that support it)
        self._limiter = _RateLimiter(requests_per_minute)
        self.stats = {"requests": 0, "retries": 0}
        self._stats_lock = threading.Lock()

    def _request(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def complete(
        self, messages: list[dict], *, schema: dict | None = None, temperature: float = 0.7, max_tokens: int = 2048
    ) -> str:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
        }
        if schema is not None and self.json_schema:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": True},
            }

        def check(message: dict) -> None:
            text = message.get("content")
            if not isinstance(text, str):
                raise ValueError("reply has no text content")
            if schema is not None:
                parse_json_object(text)  # a reply that is not the JSON asked for is retried

        return self.chat(payload, check)["content"]

    def chat(self, payload: dict[str, Any], check: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """POST one chat-completions payload, with the retries; returns `choices[0].message`. `check` raises
        ValueError for a reply that is unusable, which is retried like a transient failure."""
        last = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                with self._stats_lock:
                    self.stats["retries"] += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))  # jitter: concurrent workers do not retry in step
            self._limiter.wait()
            with self._stats_lock:
                self.stats["requests"] += 1
            try:
                message = self._request(payload)["choices"][0]["message"]
                if not isinstance(message, dict):
                    raise ValueError("reply message is not an object")
                if check is not None:
                    check(message)
                return message
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code} from {self.base_url}"
                if e.code == 400 and "response_format" in payload and "response_format" in _body(e):
                    # A server without constrained decoding (llama.cpp builds without grammars, `nanocode serve`):
                    # ask again for plain text from now on; the JSON is still parsed and checked from the reply.
                    self.json_schema = False
                    payload.pop("response_format")
                    continue
                if e.code not in RETRYABLE_STATUS:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                last = f"{self.base_url} unreachable or timed out ({type(e).__name__}: {getattr(e, 'reason', e)})"
            except (KeyError, IndexError, TypeError, ValueError) as e:
                last = f"unusable reply ({type(e).__name__}: {e})"
        raise TeacherError(f"teacher failed after {self.retries + 1} attempts: {last}")


def _body(error: urllib.error.HTTPError) -> str:
    try:
        return error.read().decode("utf-8", "replace")
    except OSError:
        return ""
