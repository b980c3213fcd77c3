"""A hand-written check of the common, well-formed UBI record: the models' outcome, ~10x cheaper.

`accept_event(data, received)` and `accept_query(data, received)` take a parsed JSON object and
return `(record_id, document)` when the record is surely valid, that is when the pydantic models
of `ingest.schema` would accept it and store exactly this document and id; else None, and the
caller asks the models. The models stay the definition of validity and the only source of
rejection reasons, so this path can be too cautious but never disagree with them (the property
tests in `tests/unit/ingest/test_ingest_fastpath.py` hold both paths to the same outcome).

On success the document is `data` itself, changed in place: timestamp normalised, id filled in.
"""

from __future__ import annotations

from typing import Any

from ingest.schema import event_source, parse_timestamp, query_source

__all__ = ["Accepted", "accept_event", "accept_query"]

Accepted = tuple[str, dict[str, Any]]
_EVENT_TEXTS = (
    "query_id",
    "session_id",
    "client_id",
    "user_id",
    "application",
    "message_type",
    "message",
    "user_query",
)
_QUERY_TEXTS = ("query_id", "client_id", "application", "object_id_field", "query_response_id")


def accept_event(data: dict[str, Any], received: str | None = None) -> Accepted | None:
    """`data` as a `UbiEvent` would be stored, with its id; None when unsure."""
    if not (
        type(data.get("action_name")) is str
        and all(_optional_text(data.get(name)) for name in _EVENT_TEXTS)
        and _event_attributes(data.get("event_attributes"))
    ):
        return None
    timestamp = _timestamp(data.get("timestamp"))
    if timestamp is None:
        return None
    data["timestamp"] = timestamp
    return event_source(data)


def accept_query(data: dict[str, Any], received: str | None = None) -> Accepted | None:
    """`data` as a `UbiQuery` would be stored, with its id; None when unsure."""
    if not (
        type(data.get("user_query")) is str
        and all(_optional_text(data.get(name)) for name in _QUERY_TEXTS)
        and _hit_ids(data)
        and type(data.get("query_attributes", _EMPTY)) is dict
    ):
        return None
    if data.get("timestamp") is not None:
        timestamp = _timestamp(data["timestamp"])
        if timestamp is None:
            return None
        data["timestamp"] = timestamp
    return query_source(data, received)


_EMPTY: dict[str, Any] = {}


def _event_attributes(attributes: Any) -> bool:
    if attributes is None:
        return True
    if type(attributes) is not dict:
        return False
    target, position = attributes.get("object"), attributes.get("position")
    return (target is None or _object(target)) and (position is None or _position(position))


def _object(target: Any) -> bool:
    return (
        type(target) is dict
        and _optional_object_id(target.get("object_id"))
        and _optional_object_id(target.get("internal_id"))
        and _optional_text(target.get("object_id_field"))
        and _optional_text(target.get("object_id_type"))
    )


def _position(position: Any) -> bool:
    if type(position) is not dict:
        return False
    ordinal, xy = position.get("ordinal"), position.get("xy")
    return (ordinal is None or type(ordinal) is int) and xy is None


def _hit_ids(data: dict[str, Any]) -> bool:
    if "query_response_hit_ids" not in data:
        return True
    hits = data["query_response_hit_ids"]
    return type(hits) is list and all(type(hit) in (str, int) for hit in hits)


def _timestamp(value: Any) -> str | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _optional_object_id(value: Any) -> bool:
    return value is None or type(value) in (str, int)


def _optional_text(value: Any) -> bool:
    return value is None or type(value) is str
