"""Errors in OpenAI's JSON shape: `{"error": {"message", "type", "param", "code"}}`, with the HTTP status.

Every refusal the server makes is one of these: a one-line message, the OpenAI error type, the request field at
fault (or None) and a machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
"""

from __future__ import annotations

from typing import Any

# The code each status gets when the raiser names none.
DEFAULT_CODES = {
    400: "invalid_value",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "request_too_large",
    500: "server_error",
    503: "server_overloaded",
}


class RequestError(Exception):
    """A request the server refuses: HTTP status, a one-line message, the OpenAI error type, the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param
        self.code = code or DEFAULT_CODES.get(status, "error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str = "invalid_value") -> RequestError:
    """A 400: the request is malformed or a value is out of range."""
    return RequestError(400, message, "invalid_request_error", param, code)
