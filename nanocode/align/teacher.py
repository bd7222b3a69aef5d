"""Teachers: the models that write synthetic rollouts, critiques and revisions.

`OpenAICompatibleTeacher` talks to any OpenAI-compatible server (a hosted API, vLLM, llama-server, `nanocode serve`)
through the official `openai` client, over chat completions or the Responses API. The client does the transport
(HTTP, timeouts, auth); the retrying is ours, because the client's own counts attempts (a few, backing off up to 8 s)
and will not wait out a `Retry-After` above two minutes, while an hour-long synth job must ride out a rate limit of
many minutes. So the client runs with `max_retries=0` and every call here retries 429, 5xx, timeouts and dropped
connections until the outage has lasted `retry_budget_s`, sleeping what `Retry-After` says (else exponential
backoff), then raises `TeacherError` (one line). Replies are checked by `teacher_reply` (the project's own reply validation); an
unusable one is asked again `retries` times. Safe to call from many threads; `requests_per_minute` spaces requests.
"""

from __future__ import annotations

import email.utils
import functools
import os
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from nanocode.align.teacher_reply import (
    chat_message,
    chat_text,
    parse_json_object,
    read_body,
    responses_text,
    usage,
)
from nanocode.core.errors import ConfigError, NanocodeError
from nanocode.core.kinds import TEACHERS

__all__ = ["OpenAICompatibleTeacher", "Teacher", "TeacherError", "parse_json_object", "is_reasoning_model"]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx
# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5...) reject `max_tokens` and `temperature`; the name may carry a
# router's provider prefix ("openai/gpt-5-mini").
REASONING_MODEL = re.compile(r"(^|/)(o\d+|gpt-5)([-.]|$)")
T = TypeVar("T")


class TeacherError(NanocodeError):
    """The teacher could not produce a usable answer within its retries."""


class Teacher:
    """Turns chat messages into text (or a JSON object, when a schema is given)."""

    def complete(
        self, messages: list[dict], *, schema: dict | None = None, temperature: float = 0.7, max_tokens: int = 2048
    ) -> str:
        raise NotImplementedError

    def complete_json(self, messages: list[dict], schema: dict, **kw) -> dict:
        """complete() and parse the reply as a JSON object (the teacher retries replies that do not parse)."""
        return parse_json_object(self.complete(messages, schema=schema, **kw))


def is_reasoning_model(model: str) -> bool:
    return bool(REASONING_MODEL.search(model.lower()))


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait: `retry-after-ms`, `Retry-After` in seconds or as an HTTP date."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            pass
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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


def _openai_module():
    try:
        import openai
    except ImportError:
        raise ConfigError(
            "the OpenAI-compatible teacher needs the openai client: pip install 'nanocode[teacher]'"
        ) from None
    return openai


def _one_line(text: str, limit: int = 200) -> str:
    return " ".join(str(text).split())[:limit]


@TEACHERS.register("openai_compatible")
class OpenAICompatibleTeacher(Teacher):
    """A teacher behind an OpenAI-compatible endpoint (API key read from an env variable).

    api: 'chat' (/chat/completions) or 'responses' (/responses). reasoning: None decides from the model name
    (o1/o3/o4/gpt-5 families): such models get `max_completion_tokens` (chat) and no temperature."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str = "default",
        api_key_env: str = "OPENAI_API_KEY",
        api: str = "chat",
        reasoning: bool | None = None,
        timeout_s: float = 120.0,
        retry_budget_s: float = 1800.0,
        retries: int = 4,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        requests_per_minute: float | None = None,
        json_schema: bool = True,
    ):
        if api not in ("chat", "responses"):
            raise ConfigError(f"openai_compatible.api = {api!r}: expected 'chat' or 'responses'")
        self.base_url, self.model, self.api_key_env, self.api = base_url.rstrip("/"), model, api_key_env, api
        self.reasoning = is_reasoning_model(model) if reasoning is None else reasoning
        self.timeout_s, self.retry_budget_s, self.retries = timeout_s, retry_budget_s, retries
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.json_schema = json_schema  # ask for JSON-schema constrained output (servers that support it)
        self._limiter = _RateLimiter(requests_per_minute)
        counters = ("requests", "retries", "rate_limited", "unusable", "schema_refused", "tokens_in", "tokens_out")
        self.stats = dict.fromkeys(counters, 0)
        self._lock = threading.Lock()
        self._client = None  # made on first use: building an experiment must not need the openai package
        self._answered = False  # the server has answered at least once (an unreachable one fails fast before)

    # ------------------------------------------------------------------------------------------ requests
    def complete(
        self, messages: list[dict], *, schema: dict | None = None, temperature: float = 0.7, max_tokens: int = 2048
    ) -> str:
        def check(text: str) -> str:
            if schema is not None:
                parse_json_object(text)  # a reply that is not the JSON asked for is asked again
            return text

        if self.api == "responses":
            send = functools.partial(self._responses, messages, schema, temperature, max_tokens)
            return self._retrying(send, lambda body: check(responses_text(body)))
        payload: dict[str, Any] = {"model": self.model, "messages": messages, **self._sampling(temperature, max_tokens)}
        return self._retrying(lambda: self._chat(payload, schema), lambda body: check(chat_text(body)))

    def chat(self, payload: dict[str, Any], check: Callable[[dict], None] | None = None) -> dict[str, Any]:
        """POST one chat-completions payload as given, with the retries; returns `choices[0].message`. `check`
        raises ValueError for a reply that is unusable, which is asked again like a malformed one."""

        def read(body: dict) -> dict:
            message = chat_message(body)
            if check is not None:
                check(message)
            return message

        return self._retrying(lambda: self._chat(payload, None), read)

    def _sampling(self, temperature: float, max_tokens: int) -> dict[str, Any]:
        if self.reasoning:
            return {"max_completion_tokens": max_tokens}
        return {"max_tokens": max_tokens, "temperature": temperature}

    def _chat(self, payload: dict[str, Any], schema: dict | None) -> bytes:
        if schema is not None and self.json_schema:
            json_schema = {"name": "reply", "schema": schema, "strict": True}
            payload = {**payload, "response_format": {"type": "json_schema", "json_schema": json_schema}}
        raw = self.client().chat.completions.with_raw_response.create(**payload)
        return raw.http_response.content

    def _responses(self, messages: list[dict], schema: dict | None, temperature: float, max_tokens: int) -> bytes:
        kw: dict[str, Any] = {"model": self.model, "input": messages, "max_output_tokens": max_tokens}
        if not self.reasoning:
            kw["temperature"] = temperature
        if schema is not None and self.json_schema:
            kw["text"] = {"format": {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}}
        raw = self.client().responses.with_raw_response.create(**kw)
        return raw.http_response.content

    def client(self):
        with self._lock:
            if self._client is None:
                openai = _openai_module()
                key = os.environ.get(self.api_key_env) or "unused"  # local servers need none; the client wants one
                self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=0)
            return self._client

    # ------------------------------------------------------------------------------------------ retries
    def _retrying(self, send: Callable[[], bytes], read: Callable[[Any], T]) -> T:
        """send() until read() accepts the reply. An outage (429, 5xx, timeouts, dropped connections) is retried
        until it has lasted `retry_budget_s`; unusable replies are asked again `retries` times; then one line."""
        openai = _openai_module()
        outage_since = None  # when the current run of failed requests began (an answer ends it)
        unusable = attempt = 0
        while True:
            self._limiter.wait()
            self._count("requests")
            began, wait = time.monotonic(), None
            try:
                content = send()
            except openai.APIStatusError as e:
                last = f"HTTP {e.status_code} from {self.base_url}: {_one_line(e.message)}"
                if e.status_code == 400 and self.json_schema and _about_schema(e):
                    # A server without constrained decoding (llama.cpp builds without grammars, `nanocode serve`):
                    # ask for plain text from now on; the JSON is still parsed and checked from the reply.
                    self.json_schema = False
                    self._count("schema_refused")  # more than one where requests were in flight together
                    continue
                if e.status_code not in RETRYABLE_STATUS and e.status_code < 500:
                    hint = f" (is ${self.api_key_env} set?)" if e.status_code in (401, 403) else ""
                    raise TeacherError(last + hint) from None
                if e.status_code == 429:
                    self._count("rate_limited")
                wait = retry_after_s(e.response.headers)
                outage_since = outage_since or began
            except openai.APIConnectionError as e:
                cause = type(e.__cause__).__name__
                last = f"{self.base_url} unreachable or timed out ({type(e).__name__}: {cause})"
                if cause == "ConnectError" and not self._answered:  # nothing listening: a wrong URL, fail fast
                    raise TeacherError(last) from None
                outage_since = outage_since or began
            else:
                self._answered, outage_since = True, None
                try:
                    body = read_body(content)
                    self._count_usage(body)
                    return read(body)
                except ValueError as e:  # UnusableReply, or a caller's check
                    unusable += 1
                    self._count("unusable")
                    if unusable > self.retries:
                        raise TeacherError(f"teacher gave {unusable} unusable replies: {_one_line(e)}") from None
            if wait is None:
                wait = min(self.max_backoff_s, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            if outage_since is not None:
                spent = time.monotonic() - outage_since
                if spent + wait > self.retry_budget_s:
                    budget = f"retry_budget_s = {self.retry_budget_s:g}"
                    raise TeacherError(f"teacher gave up after {spent:.0f} s of retries ({budget}): {last}")
            attempt += 1
            self._count("retries")
            time.sleep(wait)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.stats[name] += n

    def _count_usage(self, body: dict) -> None:
        tokens_in, tokens_out = usage(body)
        with self._lock:
            self.stats["tokens_in"] += tokens_in
            self.stats["tokens_out"] += tokens_out


def _about_schema(error) -> bool:
    text = f"{error.message} {error.body}".lower()
    return any(word in text for word in ("response_format", "json_schema", "text.format"))
