"""The error answer every route gives: `{"error": {"message", "type", "code"}}`.

`ApiError` is raised by handlers and dependencies (the app turns it into that answer);
`error_response` builds the same answer where no handler runs (ASGI middleware, the collector).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response"]


class ApiError(Exception):
    """An error answer: HTTP status, a message naming the value and the rule, an error type."""

    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.kind, self.headers)


def error_response(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The app's error answer; `extra` adds fields beside message, type and code."""
    error = {"message": message, "type": kind, "code": status, **extra}
    return JSONResponse({"error": error}, status_code=status, headers=headers)
