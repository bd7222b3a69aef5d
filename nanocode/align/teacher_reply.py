"""Reading a teacher's reply: the project's own checks on what an OpenAI-compatible server sent back.

A reply is usable when its body is JSON of the endpoint's shape (chat completions: `choices[0].message`; Responses:
`output[*].content[*]` of type `output_text`) and, when a JSON schema was asked for, its text holds a JSON object.
Anything else raises `UnusableReply` (a ValueError) with a one-line reason; the teacher asks again a bounded number
of times and the synth pipeline counts what stays unusable.
"""

from __future__ import annotations

import json
from typing import Any


class UnusableReply(ValueError):
    """The server answered, but not with something the pipeline can use."""


def parse_json_object(text: str) -> dict:
    """Parse a JSON object from a reply, tolerating ``` fences and text around the object."""
    text = text.strip()
    if text.startswith("```"):
        text = text.strip("`")
        text = text[text.find("\n") + 1 :] if "\n" in text else text
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise UnusableReply("reply holds no JSON object")
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError as e:
        raise UnusableReply(f"reply JSON does not parse ({e.msg})") from None
    if not isinstance(obj, dict):
        raise UnusableReply("reply JSON is not an object")
    return obj


def read_body(content: bytes) -> dict[str, Any]:
    """The HTTP body as a JSON object (a proxy's HTML error page or a cut-off body is unusable, not a crash)."""
    try:
        body = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UnusableReply(f"the body is not JSON: {content[:80]!r}") from None
    if not isinstance(body, dict):
        raise UnusableReply("the body is not a JSON object")
    return body


def chat_message(body: dict[str, Any]) -> dict[str, Any]:
    """`choices[0].message` of a chat-completions body."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UnusableReply("the reply has no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise UnusableReply("the reply's message is not an object")
    return message


def chat_text(body: dict[str, Any]) -> str:
    text = chat_message(body).get("content")
    if not isinstance(text, str):
        raise UnusableReply("the reply has no text content")
    return text


def responses_text(body: dict[str, Any]) -> str:
    """The concatenated `output_text` parts of a Responses API body (reasoning items carry none)."""
    output = body.get("output")
    if not isinstance(output, list):
        raise UnusableReply("the response has no output list")
    parts = [
        part["text"]
        for item in output
        if isinstance(item, dict) and item.get("type") == "message" and isinstance(item.get("content"), list)
        for part in item["content"]
        if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str)
    ]
    if not parts:
        raise UnusableReply(f"the response has no output text (status {body.get('status')!r})")
    return "".join(parts)


def usage(body: dict[str, Any]) -> tuple[int, int]:
    """(input tokens, output tokens) the server reports, in either API's field names; 0 when it reports none."""
    u = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tokens_in = u.get("prompt_tokens", u.get("input_tokens", 0))
    tokens_out = u.get("completion_tokens", u.get("output_tokens", 0))
    return (tokens_in if isinstance(tokens_in, int) else 0, tokens_out if isinstance(tokens_out, int) else 0)
