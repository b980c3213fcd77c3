"""Sessions: one UBI query record joined with the events on its hits.

A session is what a user saw and did for one `query_id`: the query text, the hit ids in the
order shown, and the actions taken on them. `read_sessions` streams both UBI indexes with the
scroll API and joins them in memory by `query_id`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, TransportError
from opensearchpy.helpers import scan

from ingest.config import IngestSettings
from tuner.errors import SessionStoreError

__all__ = ["Action", "OpenSearchSessions", "Session", "join_sessions", "read_sessions"]

log = logging.getLogger(__name__)
SCROLL = "2m"
PAGE_SIZE = 1000
TERMS_CHUNK = 1000  # query ids per terms query (OpenSearch caps terms at 65536)
SHUFFLE_PREFIX = "shuffle_top_"  # serving/rollout/randomize.py's label of a shuffled search


class Action(NamedTuple):
    """One event on a hit: what was done, and the event's `position.ordinal` as the front end
    sent it (0- or 1-based, or None). The rank is `Session.rank_of`; the ordinal is only
    cross-checked (`tuner.ordinals`)."""

    object_id: str
    action_name: str
    ordinal: int | None


@dataclass(frozen=True)
class Session:
    """One query as the user saw it, with the actions taken on its hits."""

    query_id: str
    user_query: str
    hit_ids: tuple[str, ...]
    actions: tuple[Action, ...] = field(default_factory=tuple)
    timestamp: datetime | None = None
    randomized: bool = False  # serving shuffled the top hits (serving/rollout/randomize.py)
    explored_depth: int | None = None  # how many top hits were shuffled (randomized only)
    application: str | None = None  # the UBI `application` the query came from
    model_version: str | None = None  # the model that served it (`query_attributes`)
    arm: str | None = None  # production, or an experiment's control / candidate / interleave

    def rank_of(self, object_id: str) -> int | None:
        """The 0-based rank at which `object_id` was shown, or None if it was not shown."""
        try:
            return self.hit_ids.index(object_id)
        except ValueError:
            return None


def read_sessions(
    client: OpenSearch,
    ingest_settings: IngestSettings,
    since: datetime | None = None,
    until: datetime | None = None,
    query_ids: Sequence[str] | None = None,
) -> list[Session]:
    """Sessions whose query was logged in [since, until) (open ends when None), optionally
    only those with the given `query_ids`. Events are read by query id, so an event logged
    after its query's window still joins its session."""
    queries = list(
        _scan(client, ingest_settings.queries_index, _window_query(since, until, query_ids))
    )
    ids = [str(q["query_id"]) for q in queries if q.get("query_id") is not None]
    events: list[dict[str, Any]] = []
    for start in range(0, len(ids), TERMS_CHUNK):
        chunk = {"query": {"terms": {"query_id": ids[start : start + TERMS_CHUNK]}}}
        events.extend(_scan(client, ingest_settings.events_index, chunk, missing_ok=True))
    skipped: Counter[str] = Counter()
    sessions = join_sessions(queries, events, skipped)
    if skipped:
        counts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        log.info(
            "sessions: %d read; skipped records training cannot use: %s", len(sessions), counts
        )
    return sessions


class OpenSearchSessions:
    """The `SessionSource` the product runs: sessions read from the UBI indexes."""

    def __init__(self, client: OpenSearch, ingest_settings: IngestSettings) -> None:
        self.client = client
        self.ingest_settings = ingest_settings

    def sessions(self, since: datetime | None, until: datetime | None) -> list[Session]:
        return read_sessions(self.client, self.ingest_settings, since, until)

    def sessions_by_id(self, query_ids: Sequence[str]) -> list[Session]:
        found: list[Session] = []
        for start in range(0, len(query_ids), TERMS_CHUNK):
            chunk = list(query_ids[start : start + TERMS_CHUNK])
            found.extend(read_sessions(self.client, self.ingest_settings, query_ids=chunk))
        return found


def join_sessions(
    queries: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    skipped: Counter[str] | None = None,
) -> list[Session]:
    """Join UBI query and event records by `query_id`; duplicate event ids count once.

    Events whose query is not among `queries` are dropped (their query is older than the
    window or was never stored). Sessions come back in timestamp order, and so do the actions
    of each: in the order a scan returned them, the same clicks gave training pairs in another
    order, and so other batches, on every read.

    UBI lets a record leave out what training needs (an event without a query id or an object
    id, such as a `page_exit`; a query without an id or text): such records are stored by the
    ingest worker and skipped here, counted by reason in `skipped` when it is given.
    """
    by_query: dict[str, list[Action]] = {}
    seen_events: set[str] = set()
    for event in sorted(events, key=_event_time):
        event_id = _event_id(event)
        if event_id is not None and event_id in seen_events:
            continue
        if event_id is not None:
            seen_events.add(event_id)
        action = _action(event, skipped)
        if action is not None:
            by_query.setdefault(str(event["query_id"]), []).append(action)
    sessions = [_session(q, by_query.get(str(q.get("query_id")), []), skipped) for q in queries]
    present = [s for s in sessions if s is not None]
    return sorted(present, key=lambda s: _time_key(s.timestamp))


def _event_time(event: Mapping[str, Any]) -> float:
    return _time_key(_timestamp(event.get("timestamp")))


def _time_key(moment: datetime | None) -> float:
    """A sort key for a moment; records without a valid time go last."""
    return moment.timestamp() if moment is not None else float("inf")


def _window_query(
    since: datetime | None, until: datetime | None, query_ids: Sequence[str] | None
) -> dict[str, Any]:
    filters: list[dict[str, Any]] = []
    bounds = {"gte": since.isoformat()} if since is not None else {}
    if until is not None:
        bounds["lt"] = until.isoformat()
    if bounds:
        filters.append({"range": {"timestamp": bounds}})
    if query_ids is not None:
        filters.append({"terms": {"query_id": list(query_ids)}})
    return {"query": {"bool": {"filter": filters}}} if filters else {"query": {"match_all": {}}}


def _scan(
    client: OpenSearch, index: str, query: dict[str, Any], missing_ok: bool = False
) -> Iterator[dict[str, Any]]:
    try:
        hits = list(scan(client, index=index, query=query, scroll=SCROLL, size=PAGE_SIZE))
    except NotFoundError as exc:
        if missing_ok:
            return iter(())
        raise SessionStoreError(
            f"UBI index {index!r} does not exist: no sessions have been ingested yet "
            f"(run `clicktune ingest run`, or check ingest.queries_index)"
        ) from exc
    except TransportError as exc:
        raise SessionStoreError(f"reading UBI index {index!r} failed: {exc}") from exc
    return ({**hit["_source"], "_id": hit["_id"]} for hit in hits)


def _event_id(event: Mapping[str, Any]) -> str | None:
    attributes = event.get("event_attributes") or {}
    event_id = attributes.get("event_id") or event.get("_id")
    return str(event_id) if event_id is not None else None


def _action(event: Mapping[str, Any], skipped: Counter[str] | None = None) -> Action | None:
    attributes = _mapping(event.get("event_attributes"))
    object_id = _mapping(attributes.get("object")).get("object_id")
    ordinal = _mapping(attributes.get("position")).get("ordinal")
    reason = None
    if event.get("query_id") in (None, ""):
        reason = "event without a query_id"
    elif object_id in (None, "") or isinstance(object_id, dict | list):
        reason = "event without an object id"
    elif not event.get("action_name"):
        reason = "event without an action_name"
    if reason is not None:
        if skipped is not None:
            skipped[reason] += 1
        return None
    return Action(str(object_id), str(event["action_name"]), _int_or_none(ordinal))


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` if it is a JSON object, else an empty one (UBI lets clients put anything there)."""
    return value if isinstance(value, Mapping) else {}


def _session(
    query: Mapping[str, Any], actions: list[Action], skipped: Counter[str] | None = None
) -> Session | None:
    if query.get("query_id") in (None, "") or not isinstance(query.get("user_query"), str):
        if skipped is not None:
            skipped["query without a query_id or user_query"] += 1
        return None
    hits = query.get("query_response_hit_ids") or []
    if not isinstance(hits, list):
        hits = []
    attributes = _mapping(query.get("query_attributes"))
    application = query.get("application")
    return Session(
        query_id=str(query["query_id"]),
        user_query=str(query["user_query"]),
        hit_ids=tuple(str(h) for h in hits),
        actions=tuple(actions),
        timestamp=_timestamp(query.get("timestamp")),
        randomized=bool(attributes.get("randomized")),
        explored_depth=_explored_depth(attributes.get("randomized")),
        application=application if isinstance(application, str) else None,
        model_version=_text_or_none(attributes.get("model_version")),
        arm=_text_or_none(attributes.get("arm")),
    )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _explored_depth(label: Any) -> int | None:
    """The depth of a `shuffle_top_<depth>` label (serving/rollout/randomize.py), else None."""
    if not isinstance(label, str) or not label.startswith(SHUFFLE_PREFIX):
        return None
    return _int_or_none(label.removeprefix(SHUFFLE_PREFIX))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
