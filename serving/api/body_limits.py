"""Request bodies: a size limit counted while reading, and a bound on JSON nesting.

`BodyLimits` is ASGI middleware around the whole app, so every route gets both checks whether
the body comes with a Content-Length or chunked:

- a declared Content-Length over the limit -> 413 before anything is read; otherwise the body
  is read chunk by chunk and refused with 413 as soon as the count passes the limit;
- a JSON (or text/plain, as `sendBeacon` sends it) body nested deeper than `max_depth` -> 422
  naming the depth and the rule, before any parser recurses into it (Python's `json` raises
  RecursionError around depth 1000, which answered 500).

A route may have its own, smaller, limit: `openapi_extra=body_limit(n)` on the route, which also
shows the limit in the OpenAPI schema. The body, once checked, is passed on in one piece.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.api.api_errors import error_response
from serving.api.auth import api_routes

__all__ = ["BODY_LIMIT_KEY", "BodyLimits", "body_limit", "json_depth", "route_limits"]

BODY_LIMIT_KEY = "x-max-body-bytes"
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_CHECKED_TYPES = ("", "text/plain")


def body_limit(max_bytes: int) -> dict[str, Any]:
    """`openapi_extra` of a route whose bodies may have at most `max_bytes` bytes."""
    return {BODY_LIMIT_KEY: max_bytes}


def route_limits(routes: list[Any]) -> dict[str, int]:
    """Path -> limit of the routes that declared their own with `body_limit`."""
    return {
        route.path: int(route.openapi_extra[BODY_LIMIT_KEY])
        for route in api_routes(routes)
        if BODY_LIMIT_KEY in (route.openapi_extra or {})
    }


def json_depth(body: bytes) -> int:
    """How deeply `body`'s arrays and objects nest (brackets inside strings do not count).

    Cheap: a body with fewer opening brackets than the bound cannot exceed it and is not
    scanned; otherwise strings are cut out by a regex and the rest summed by numpy.
    """
    opening = body.count(b"[") + body.count(b"{")
    if opening <= 1:
        return opening
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    steps = np.frombuffer(brackets, np.uint8)
    if steps.size == 0:
        return 0
    levels = np.cumsum(np.where((steps == ord("[")) | (steps == ord("{")), 1, -1))
    return int(levels.max(initial=0))


class _Refused(Exception):
    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class BodyLimits:
    """ASGI middleware: 413 over `max_bytes` (or the route's own limit), 422 over `max_depth`."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_depth: int,
        per_path: Mapping[str, int] | None = None,
    ) -> None:
        self.app, self.max_bytes, self.max_depth = app, max_bytes, max_depth
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        try:
            body = await self._read(scope, receive, limit)
            if body is None:  # the client went away before sending all of it
                return
            self._check_depth(scope, body)
        except _Refused as refused:
            answer = error_response(refused.status, refused.message, refused.kind)
            await answer(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, scope: Scope, receive: Receive, limit: int) -> bytes | None:
        length = _header(scope, b"content-length")
        if length.isdigit() and int(length) > limit:
            raise _too_large(f"{int(length)}", limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(f"over {size}", limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check_depth(self, scope: Scope, body: bytes) -> None:
        media_type = _header(scope, b"content-type").split(";")[0].strip().lower()
        if not body or not (media_type in _CHECKED_TYPES or media_type.endswith("json")):
            return
        depth = json_depth(body)
        if depth > self.max_depth:
            raise _Refused(
                422,
                f"JSON nested {depth} levels deep; the limit is max_json_depth={self.max_depth}",
                "invalid_request_error",
            )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the checked body, then waits for the client as usual."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _too_large(amount: str, limit: int) -> _Refused:
    return _Refused(
        413, f"body of {amount} bytes exceeds max_body_bytes={limit}", "request_too_large"
    )
