"""UBI query and event records, accepted as the UBI 1.3.0 specification defines them.

Every record valid under the published schemas (o19s/ubi `schema/1.3.0/event.schema.json` and
`query.request.schema.json`) is stored, and so are the specification's own samples, which are
looser than its schemas (an event whose `position` is `{}` and whose `object` has no `object_id`).
The rule is the schemas' types, not their `required` lists inside `event_attributes`:

- event: `action_name` and `timestamp` required; `event_attributes`, its `object` and `position`
  optional objects; `object_id` and `internal_id` a string or an integer, kept as sent (the index
  maps them as keywords, so `7` is found as "7"); `ordinal` any integer, `xy.x` / `xy.y` numbers;
- query: `user_query` required; `timestamp` optional (the time the record was received, as the
  UBI plugin stamps a query when it runs it); hit ids strings (integers too, as keywords);
- every other spec field a string where the spec says string; unknown fields kept as they are.

A search request that carries its UBI query the way the spec's samples do (OpenSearch's
`ext.ubi`, Solr's `params` with `ubi`) is unwrapped into the query record, with the engine's
query kept as text under `query`, as the UBI plugin stores it.

Timestamps are stored as ISO-8601 UTC. A record without a usable id (`query_id`, or the
`event_attributes.event_id` of clicktune's convention) gets one derived from its content
(`ingest.ids.content_id`); the id becomes the OpenSearch `_id`, which takes 1 to 512 bytes.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
)

from ingest.ids import canonical_json, content_id

__all__ = [
    "EARLIEST",
    "ESCAPED",
    "FUTURE_SLACK",
    "MAX_RECORD_ID_BYTES",
    "EventAttributes",
    "UbiEvent",
    "UbiObject",
    "UbiPosition",
    "UbiQuery",
    "escape_keys",
    "event_source",
    "parse_timestamp",
    "query_source",
    "unwrap_query",
    "usable_id",
]

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
_EARLIEST_MS = int(EARLIEST.timestamp()) * 1000
_FUTURE_SLACK_MS = int(FUTURE_SLACK.total_seconds()) * 1000
MAX_RECORD_ID_BYTES = 512  # OpenSearch refuses an empty `_id` and one over 512 bytes
Text = StrictStr


def usable_id(value: Any) -> str | None:
    """`value` as an OpenSearch `_id` (a string or integer of 1 to 512 bytes), else None."""
    if type(value) is int:
        return str(value)
    if (
        type(value) is str
        and 0 < len(value.encode("utf-8", "surrogatepass")) <= MAX_RECORD_ID_BYTES
    ):
        return value
    return None


def parse_timestamp(value: Any) -> str:
    """ISO-8601 / RFC 3339 text, or epoch milliseconds, -> ISO-8601 UTC text.

    Any instant that text can name is kept (UBI's `date-time` has no range); epoch milliseconds,
    which UBI does not define, must fall between 2000-01-01 and a day from now, so that seconds
    sent as milliseconds are refused rather than stored as January 1970.
    """
    if type(value) in (int, float):
        if _EARLIEST_MS <= value <= time.time() * 1000 + _FUTURE_SLACK_MS:
            if type(value) is int:
                return _millis_text(value)  # ~5x cheaper than through datetime
            instant = datetime.fromtimestamp(value / 1000, tz=UTC)
            return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        raise ValueError(
            f"{value!r} as epoch milliseconds is not between {EARLIEST.date().isoformat()} "
            f"and {FUTURE_SLACK.days} day from now"
        )
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is neither ISO-8601 text nor epoch milliseconds")
    return _iso_text(value)


def _millis_text(millis: int) -> str:
    """Epoch milliseconds -> "YYYY-MM-DDTHH:MM:SS.mmmZ", as `datetime.isoformat` writes it."""
    second, rest = divmod(millis, 1000)
    return f"{_second_text(second)}.{rest:03d}Z"


@lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _iso_text(value: str) -> str:
    """RFC 3339 allows a lower-case `t` / `z` and a leap second (`:60`), which Python's
    parser does not: both are normalised first (a leap second is kept as :59.999)."""
    text = value.strip()
    if text.isdigit():
        return parse_timestamp(int(text))
    text = text.replace("t", "T", 1).replace("z", "Z")
    leap = len(text) > 19 and text[10:11] == "T" and text[17:19] == "60"
    if leap:
        text = text[:17] + "59" + text[19:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is neither ISO-8601 text nor epoch milliseconds") from exc
    try:
        instant = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00, whose UTC year is 0: keep its offset
        return parsed.isoformat(timespec="milliseconds")
    if leap:
        instant = instant.replace(microsecond=999_000)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _optional_timestamp(value: Any) -> str | None:
    return None if value is None else parse_timestamp(value)


def _object_id(value: Any) -> str | int | None:
    if value is None or type(value) in (str, int):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"{_short(value)} is neither a string nor an integer (UBI 1.3.0 object ids)")


def _hit_id(value: Any) -> str | int:
    if type(value) in (str, int):
        return value  # type: ignore[no-any-return]
    raise ValueError(f"{_short(value)} is neither a string nor an integer (a hit's object id)")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


Timestamp = Annotated[str, BeforeValidator(parse_timestamp)]
OptionalTimestamp = Annotated[str | None, BeforeValidator(_optional_timestamp)]
ObjectId = Annotated[str | int | None, BeforeValidator(_object_id)]
HitId = Annotated[str | int, BeforeValidator(_hit_id)]
Number = StrictInt | StrictFloat


class _Open(BaseModel):
    """A UBI object: known fields checked, unknown ones kept."""

    model_config = ConfigDict(extra="allow")

    def content(self) -> dict[str, Any]:
        """The record as sent, with known fields normalised (timestamps)."""
        return self.model_dump(mode="json", exclude_unset=True)


class UbiObject(_Open):
    object_id: ObjectId = None
    internal_id: ObjectId = None
    object_id_field: Text | None = None
    object_id_type: Text | None = None


class UbiXY(_Open):
    x: Number | None = None
    y: Number | None = None


class UbiPosition(_Open):
    ordinal: StrictInt | None = None
    xy: UbiXY | None = None


class EventAttributes(_Open):
    object: UbiObject | None = None
    position: UbiPosition | None = None


class UbiQuery(_Open):
    """One search as the user saw it: the query and the hits shown, in order."""

    query_id: Text | None = None
    timestamp: OptionalTimestamp = None
    client_id: Text | None = None
    user_query: Text
    query_response_id: Text | None = None
    query_response_hit_ids: list[HitId] = Field(default_factory=list)
    application: Text | None = None
    object_id_field: Text | None = None
    query_attributes: dict[str, Any] = Field(default_factory=dict)


class UbiEvent(_Open):
    """One user action (click, add_to_cart, purchase, page_exit, ...), maybe on one object."""

    action_name: Text
    timestamp: Timestamp
    query_id: Text | None = None
    session_id: Text | None = None
    client_id: Text | None = None
    user_id: Text | None = None
    application: Text | None = None
    message_type: Text | None = None
    message: Text | None = None
    user_query: Text | None = None
    event_attributes: EventAttributes | None = None


ESCAPED = "clicktune_escaped"  # where keys OpenSearch cannot take at a mapped level are kept
# The objects the index templates map (ingest.templates): at these levels OpenSearch parses every
# key, and refuses an empty one or one with a dot ("", ".", "a..b"; "a.b" would be read as a path
# into a mapped field). UBI allows any key, so such members move, unchanged, into ESCAPED there.
QUERY_LEVELS: dict[str, Any] = {"query_attributes": {}}
EVENT_LEVELS: dict[str, Any] = {"event_attributes": {"object": {}, "position": {"xy": {}}}}


def escape_keys(node: dict[str, Any], levels: dict[str, Any]) -> dict[str, Any]:
    """`node` with the keys OpenSearch cannot parse at a mapped level moved into `ESCAPED` there
    (recursively through the mapped children in `levels`); `node` itself when none is found."""
    bad = [key for key in node if key == "" or "." in key]
    children = {k: v for k, v in levels.items() if isinstance(node.get(k), dict)}
    if not bad and not children:
        return node
    escaped = {key: node[key] for key in bad}
    out = {key: value for key, value in node.items() if key not in escaped}
    for key, sub in children.items():
        out[key] = escape_keys(out[key], sub)
    if escaped:
        held = out.get(ESCAPED)
        out[ESCAPED] = {**held, **escaped} if isinstance(held, dict) else {**escaped, ESCAPED: held}
        if held is None:
            out[ESCAPED].pop(ESCAPED)
    return out


def query_source(content: dict[str, Any], received: str | None = None) -> tuple[str, dict]:
    """(`_id`, source) of a valid query's content: its timestamp is `received` when it has none,
    and a query without a `query_id` gets one derived from that content."""
    if content.get("timestamp") is None and received is not None:
        content["timestamp"] = received
    record_id = usable_id(content.get("query_id"))
    if record_id is None:
        record_id = content_id(content)
        content.setdefault("query_id", record_id)
    return record_id, escape_keys(content, QUERY_LEVELS)


def event_source(content: dict[str, Any]) -> tuple[str, dict]:
    """(`_id`, source) of a valid event's content: `event_attributes.event_id` when usable, else
    an id derived from the content, written there when the event has attributes and no id."""
    attributes = content.get("event_attributes")
    given = attributes.get("event_id") if isinstance(attributes, dict) else None
    record_id = usable_id(given)
    if record_id is None:
        record_id = content_id(content)
        if isinstance(attributes, dict) and "event_id" not in attributes:
            attributes["event_id"] = record_id
    return record_id, escape_keys(content, EVENT_LEVELS)


def unwrap_query(data: dict[str, Any]) -> dict[str, Any]:
    """The UBI query record of a search request that carries one the way UBI's samples do:
    OpenSearch's `{"ext": {"ubi": {...}}, "query": {...}}` or Solr's `{"query": "...",
    "params": {"ubi": "true", ...}}`; `data` itself when it is a plain query record."""
    if "user_query" in data:
        return data
    ext = data.get("ext")
    if isinstance(ext, dict) and isinstance(ext.get("ubi"), dict):
        record = dict(ext["ubi"])
    elif isinstance(data.get("params"), dict) and "ubi" in data["params"]:
        record = {k: v for k, v in data["params"].items() if k != "ubi"}
    else:
        return data
    if "query" in data and "query" not in record:
        query = data["query"]
        record["query"] = query if isinstance(query, str) else canonical_json(query)
    return record
