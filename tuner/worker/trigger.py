"""The trigger: queue a fine-tuning task once enough new sessions have built up.

New sessions are the UBI queries logged since the last released batch's window ended and
before `now - grace` (what the next `release_batch` would take). A task is queued when there
are at least `min_new_sessions` of them, at least `min_interval_s` have passed since the last
batch was released, and no task is queued or running. Every decision is logged with its counts.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException

from tuner.batches import Batches
from tuner.config import WorkerSettings
from tuner.errors import SessionStoreError

__all__ = ["OpenSearchSessionCounter", "SessionCounter", "TriggerDecision", "check", "decide"]

log = logging.getLogger(__name__)


class SessionCounter(Protocol):
    """How many sessions (UBI queries) were logged in [since, until)."""

    def count(self, since: datetime | None, until: datetime) -> int: ...


class OpenSearchSessionCounter:
    """Counts UBI query records in the queries index (a missing index counts 0)."""

    def __init__(self, client: OpenSearch, queries_index: str) -> None:
        self.client = client
        self.index = queries_index

    def count(self, since: datetime | None, until: datetime) -> int:
        bounds: dict[str, str] = {"lt": until.isoformat()}
        if since is not None:
            bounds["gte"] = since.isoformat()
        body = {"query": {"range": {"timestamp": bounds}}}
        try:
            return int(self.client.count(index=self.index, body=body)["count"])
        except NotFoundError:
            return 0
        except OpenSearchException as exc:
            raise SessionStoreError(f"cannot count sessions in {self.index!r}: {exc}") from exc


@dataclass(frozen=True)
class TriggerDecision:
    """Whether to queue a task now, the counts it rests on, and why."""

    fire: bool
    new_sessions: int
    since_last_batch_s: float | None
    last_batch: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    new_sessions: int,
    since_last_batch_s: float | None,
    settings: WorkerSettings,
    busy: str | None = None,
    last_batch: str | None = None,
) -> TriggerDecision:
    """The rule: N new sessions, the minimum interval, and no task already queued or running."""
    counts = f"{new_sessions} new sessions (min_new_sessions={settings.min_new_sessions}), " + (
        f"{since_last_batch_s:.0f} s since {last_batch} (min_interval_s="
        f"{settings.min_interval_s:.0f})"
        if since_last_batch_s is not None
        else "no batch released yet"
    )
    too_soon = since_last_batch_s is not None and since_last_batch_s < settings.min_interval_s
    fire = busy is None and new_sessions >= settings.min_new_sessions and not too_soon
    verdict = f"wait ({busy})" if busy is not None else ("queue a task" if fire else "wait")
    return TriggerDecision(
        fire, new_sessions, since_last_batch_s, last_batch, f"{verdict}: {counts}"
    )


def check(
    batches: Batches,
    counter: SessionCounter,
    settings: WorkerSettings,
    now: datetime,
    grace: timedelta,
    busy: str | None = None,
) -> TriggerDecision:
    """Count the unreleased sessions and decide; the decision is logged with its counts."""
    released = batches.list()
    last = released[-1] if released else None
    start = datetime.fromisoformat(last.window_end) if last is not None else None
    end = now - grace
    new = counter.count(start, end) if start is None or end > start else 0
    since = (now - datetime.fromisoformat(last.released_at)).total_seconds() if last else None
    decision = decide(new, since, settings, busy, last.batch_id if last else None)
    log.info("trigger: %s", decision.reason)
    return decision
