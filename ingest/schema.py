"""UBI query and event records, accepted as UBI clients send them.

Known fields are checked (types, ids, ranks, timestamps); unknown fields are kept as they are,
so any client that already emits UBI works unchanged. Timestamps are stored as ISO-8601 UTC.
A record without an id gets one derived from its content (`ingest.ids.content_id`).
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
    StrictInt,
    StringConstraints,
)

from ingest.ids import content_id

__all__ = [
    "EARLIEST",
    "FUTURE_SLACK",
    "MAX_ORDINAL",
    "MAX_RECORD_ID_CHARS",
    "EventAttributes",
    "UbiEvent",
    "UbiObject",
    "UbiPosition",
    "UbiQuery",
    "parse_timestamp",
]

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)
_EARLIEST_MS = int(EARLIEST.timestamp()) * 1000
_FUTURE_SLACK_MS = int(FUTURE_SLACK.total_seconds()) * 1000
MAX_ORDINAL = 2**31 - 1  # OpenSearch `integer`
MAX_RECORD_ID_CHARS = 512

# OpenSearch refuses an empty `_id` and one over 512 bytes; refusing them here names the field.
RecordId = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=MAX_RECORD_ID_CHARS)
]
Text = Annotated[str, StringConstraints(strict=True)]


def parse_timestamp(value: Any) -> str:
    """ISO-8601 text or epoch milliseconds -> ISO-8601 UTC text; refuses absurd instants."""
    if type(value) is int and _EARLIEST_MS <= value <= time.time() * 1000 + _FUTURE_SLACK_MS:
        return _millis_text(value)  # the common case, ~5x cheaper than through datetime
    instant = _to_datetime(value)
    latest = datetime.now(UTC) + FUTURE_SLACK
    if instant < EARLIEST:
        raise ValueError(f"{value!r} is before {EARLIEST.date().isoformat()}")
    if instant > latest:
        raise ValueError(f"{value!r} is more than {FUTURE_SLACK.days} day in the future")
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _millis_text(millis: int) -> str:
    """Epoch milliseconds -> "YYYY-MM-DDTHH:MM:SS.mmmZ", as `datetime.isoformat` writes it."""
    second, rest = divmod(millis, 1000)
    return f"{_second_text(second)}.{rest:03d}Z"


@lru_cache(maxsize=4096)
def _second_text(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _to_datetime(value: Any) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is neither ISO-8601 text nor epoch milliseconds")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    try:
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.strip())
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise ValueError(f"{value!r} is neither ISO-8601 text nor epoch milliseconds") from exc


Timestamp = Annotated[str, BeforeValidator(parse_timestamp)]


class _Open(BaseModel):
    """A UBI object: known fields checked, unknown ones kept."""

    model_config = ConfigDict(extra="allow")


class UbiObject(_Open):
    object_id: RecordId
    object_id_field: Text | None = None


class UbiPosition(_Open):
    ordinal: Annotated[StrictInt, Field(ge=0, le=MAX_ORDINAL)] | None = None


class EventAttributes(_Open):
    object: UbiObject
    position: UbiPosition | None = None
    event_id: RecordId | None = None
    session_id: Text | None = None


class UbiQuery(_Open):
    """One search as the user saw it: the query and the hits shown, in order."""

    query_id: RecordId | None = None
    timestamp: Timestamp
    client_id: Text | None = None
    user_query: Text
    query_response_hit_ids: list[RecordId] = Field(default_factory=list)
    application: Text | None = None
    query_attributes: dict[str, Any] = Field(default_factory=dict)

    @property
    def record_id(self) -> str:
        return self.query_id or content_id(self._content())

    def document(self) -> dict[str, Any]:
        """The OpenSearch source: the record as sent (timestamp normalised) plus its id."""
        return {**self._content(), "query_id": self.record_id}

    def _content(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)


class UbiEvent(_Open):
    """One user action (click, add_to_cart, purchase, ...) on one object of a result list."""

    action_name: Text
    query_id: RecordId | None = None
    client_id: Text | None = None
    timestamp: Timestamp
    message_type: Text | None = None
    event_attributes: EventAttributes

    @property
    def record_id(self) -> str:
        return self.event_attributes.event_id or content_id(self._content())

    def document(self) -> dict[str, Any]:
        """The OpenSearch source: the record as sent (timestamp normalised) plus its event id."""
        source = self._content()
        source["event_attributes"]["event_id"] = self.record_id
        return source

    def _content(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_unset=True)
