"""Bearer tokens with scopes: every route declares the scope it needs, the app checks it.

Scopes are ordered: `public` (no token) < `read` < `write` < `admin`, and a token grants its own
scope and those below it (the admin token grants every scope). A route declares its scope with
`dependencies=[requires(Scope.WRITE)]`; `create_app` refuses to build an app with a route that
declares none, so a new route cannot go out unprotected by omission. Answers:

- no `Authorization: Bearer` header, or a token that matches none -> 401 with
  `WWW-Authenticate: Bearer`;
- a valid token whose scope is below the route's -> 403;
- no token configured that could grant the scope -> 503 saying which variable to set.

`read` routes are open unless `open_reads` is False (`auth.protect_reads`): the data plane
(embeddings, search) is called by ml-commons connectors and front ends that may carry no token.
Tokens are compared as SHA-256 digests with `hmac.compare_digest`, every configured token each
time, so the answer time tells nothing about how much of a token matched.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping
from enum import IntEnum
from typing import Any

from fastapi import Depends, Request, Security
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer

try:  # FastAPI >= 0.16x keeps included routers nested; this walks the routes they hold
    from fastapi.routing import iter_route_contexts
except ImportError:  # older FastAPI copies every included route into app.routes

    def iter_route_contexts(routes: Any) -> Any:  # type: ignore[no-redef,misc]
        return iter(routes)


from serving.api.api_errors import ApiError

__all__ = ["Authenticator", "Scope", "api_routes", "requires", "scope_of", "undeclared_routes"]

_BEARER = HTTPBearer(auto_error=False)  # only so the OpenAPI schema shows the scheme


class Scope(IntEnum):
    """What a route needs; a token of scope S passes every route of scope <= S."""

    PUBLIC = 0
    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


ENV = {  # where `clicktune serve` reads the token of each scope (clicktune/config.py)
    Scope.ADMIN: "CLICKTUNE_ADMIN__TOKEN",
    Scope.WRITE: "CLICKTUNE_AUTH__WRITE_TOKEN",
    Scope.READ: "CLICKTUNE_AUTH__READ_TOKEN",
}


class Authenticator:
    """Checks a request's bearer token against the tokens configured per scope."""

    def __init__(self, tokens: Mapping[Scope, str | None] | None = None, open_reads: bool = True):
        self._digests = [
            (scope, _digest(token)) for scope, token in (tokens or {}).items() if token
        ]
        self.open_reads = open_reads

    def check(self, needed: Scope, authorization: str | None) -> None:
        """Return if `authorization` (the header's value) grants `needed`, else raise ApiError."""
        if needed == Scope.PUBLIC or (needed == Scope.READ and self.open_reads):
            return
        if not any(scope >= needed for scope, _ in self._digests):
            raise ApiError(503, _not_configured(needed), "auth_not_configured")
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise _unauthorized(
                f"this route needs scope {needed.label!r}: send 'Authorization: Bearer <token>'"
            )
        granted = self.scope_of(given.strip())
        if granted is None:
            raise _unauthorized("the bearer token matches no configured token", invalid=True)
        if granted < needed:
            raise ApiError(
                403,
                f"the token grants scope {granted.label!r}; this route needs {needed.label!r}",
                "forbidden",
            )

    def scope_of(self, token: str) -> Scope | None:
        """The highest scope `token` grants, None if it is no configured token."""
        given = _digest(token)
        granted = None
        for scope, digest in self._digests:  # no early exit: every token is compared
            if hmac.compare_digest(given, digest) and (granted is None or scope > granted):
                granted = scope
        return granted


_NO_TOKENS = Authenticator()


class _Requirement:
    """The dependency `requires` adds; `create_app` finds it on each route (`scope_of`)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def __call__(self, request: Request) -> None:
        if self.scope == Scope.PUBLIC:
            return
        # An app not built by create_app has no tokens: nothing but public routes answer.
        authenticator = getattr(request.app.state, "authenticator", None) or _NO_TOKENS
        authenticator.check(self.scope, request.headers.get("authorization"))


def requires(scope: Scope) -> DependsParam:
    """The dependency a route declares its scope with: `dependencies=[requires(Scope.WRITE)]`."""
    requirement = _Requirement(scope)
    if scope == Scope.PUBLIC:
        return Depends(requirement)

    def guarded(request: Request, _: object = Security(_BEARER)) -> None:
        requirement(request)

    guarded.requirement = requirement  # type: ignore[attr-defined]
    return Depends(guarded)


def api_routes(routes: Iterable[Any]) -> Iterator[Any]:
    """Every API route of an app's `routes`, those of included routers too, as the app sees
    them (`.path`, `.methods`, `.dependencies` with the router's own, `.openapi_extra`)."""
    for route in iter_route_contexts(list(routes)):
        if isinstance(getattr(route, "original_route", route), APIRoute):
            yield route


def scope_of(route: Any) -> Scope | None:
    """The scope an API route declared with `requires` (the highest, if several), else None."""
    scopes = [
        getattr(d.dependency, "requirement", d.dependency).scope
        for d in route.dependencies
        if isinstance(getattr(d.dependency, "requirement", d.dependency), _Requirement)
    ]
    return max(scopes) if scopes else None


def undeclared_routes(routes: Iterable[Any]) -> list[str]:
    """'METHOD /path' of every API route that declares no scope."""
    return [
        f"{','.join(sorted(route.methods))} {route.path}"
        for route in api_routes(routes)
        if scope_of(route) is None
    ]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _not_configured(scope: Scope) -> str:
    names = [ENV[s] for s in sorted(ENV, reverse=True) if s >= scope]
    return (
        f"no token configured for scope {scope.label!r}: set {' or '.join(names)} in the "
        "server's environment"
    )


def _unauthorized(message: str, invalid: bool = False) -> ApiError:
    challenge = 'Bearer realm="clicktune"' + (', error="invalid_token"' if invalid else "")
    return ApiError(401, message, "unauthorized", {"WWW-Authenticate": challenge})
