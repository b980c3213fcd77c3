"""`GET /dashboard`: one read-only status page of the whole loop, and the JSON it polls.

The page (`dashboard.html`, inline CSS and vanilla JS, no CDN: nothing outside loopback need be
reachable) re-reads `GET /dashboard/data` every `poll_s` seconds and draws its plots as inline
SVG. The data comes from provider callables the composition root passes in
(`DashboardSources`, one per panel, each returning a plain dict; see
`serving/api/dashboard_sources.py` for the real ones). A provider that raises or takes longer than
`source_timeout_s` makes its panel read `unavailable: <why>`; the other panels and the HTTP
status (200) are unaffected, so one broken dependency never blanks the page.

No admin token. The page shows model names, aliases, aggregate A/B rates, consumer lag and
training metrics: no secrets, no documents, no user data, the same kind of figures `/metrics`
already exposes without a token, and nothing on it changes state. Asking for the bearer token
would also mean a browser could not simply open it. A replica that must not show even that
turns it off with `serving.dashboard.enabled: false`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from serving.api.auth import Scope, requires
from serving.config import DashboardSettings

__all__ = ["Collector", "DashboardSources", "Source", "dashboard_router"]

Source = Callable[[], dict[str, Any]]
NO_TASK_STORE = "no task store configured"
PUBLIC = [requires(Scope.PUBLIC)]  # see the module docstring


@dataclass(frozen=True)
class DashboardSources:
    """One provider per panel; None shows the panel as unavailable with the reason below."""

    models: Source | None = None
    ab: Source | None = None
    uplift: Source | None = None
    ingest: Source | None = None
    training: Source | None = None
    tasks: Source | None = None

    def as_mapping(self) -> dict[str, Source | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Collector:
    """Reads every panel in parallel, each source at most once at a time.

    A source still busy from an earlier poll is waited on again rather than called a second
    time, so a hung dependency holds one worker thread, never the whole pool.
    """

    def __init__(self, sources: DashboardSources, timeout_s: float) -> None:
        self.sources = sources.as_mapping()
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(len(self.sources), thread_name_prefix="dashboard")
        self._running: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()

    def read(self) -> dict[str, dict[str, Any]]:
        """Every panel: `{"ok": True, "data": {...}}` or `{"ok": False, "error": ...}`."""
        with self._lock:
            futures = {name: self._start(name, s) for name, s in self.sources.items() if s}
        deadline = time.monotonic() + self.timeout_s
        panels: dict[str, dict[str, Any]] = {}
        for name in self.sources:
            future = futures.get(name)
            if future is None:
                why = NO_TASK_STORE if name == "tasks" else f"no {name} source configured"
                panels[name] = _unavailable(why)
                continue
            panels[name] = self._outcome(future, max(0.0, deadline - time.monotonic()))
        return panels

    def _start(self, name: str, source: Source) -> Future[Any]:
        running = self._running.get(name)
        if running is None or running.done():
            running = self._running[name] = self._pool.submit(source)
        return running

    def _outcome(self, future: Future[Any], wait_s: float) -> dict[str, Any]:
        try:
            data = future.result(timeout=wait_s)
        except FutureTimeout:
            return _unavailable(f"no answer within source_timeout_s={self.timeout_s:g}")
        except Exception as exc:  # any failure of a source is that panel's business only
            return _unavailable(f"{type(exc).__name__}: {exc}")
        if not isinstance(data, Mapping):
            return _unavailable(f"the source returned {type(data).__name__}, not a dict")
        return {"ok": True, "data": dict(data)}


def dashboard_router(sources: DashboardSources, settings: DashboardSettings) -> APIRouter:
    """`GET /dashboard` (the page) and `GET /dashboard/data` (what it polls)."""
    router = APIRouter(prefix="/dashboard", tags=["dashboard"], dependencies=PUBLIC)
    page = resources.files("serving.api").joinpath("dashboard.html").read_text(encoding="utf-8")
    collector = Collector(sources, settings.source_timeout_s)
    cache = _Cache(settings.cache_s)

    @router.get("", response_class=HTMLResponse)
    def dashboard() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.get("/data")
    def data() -> dict[str, Any]:
        def read() -> dict[str, Any]:
            return {
                "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "poll_s": settings.poll_s,
                "panels": collector.read(),
            }

        return cache.get(read)

    return router


class _Cache:
    """The last reading for `ttl_s` seconds: several open pages cost one reading, not one each."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._value: tuple[float, dict[str, Any]] | None = None

    def get(self, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:  # a second caller waits for the first reading instead of repeating it
            now = time.monotonic()
            if self._value is not None and now - self._value[0] < self.ttl_s:
                return self._value[1]
            value = read()
            self._value = (time.monotonic(), value)
            return value


def _unavailable(why: str) -> dict[str, Any]:
    return {"ok": False, "error": f"unavailable: {why}"}
