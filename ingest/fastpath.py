"""A hand-written check of the common, well-formed UBI record: the models' outcome, ~10x cheaper.

`accept_event(data)` and `accept_query(data)` take a parsed JSON object and return
`(record_id, document)` when the record is surely valid, that is when the pydantic models of
`ingest.schema` would accept it and dump exactly this document and id; else None, and the caller
asks the models. The models stay the definition of validity and the only source of rejection
reasons, so this path can be too cautious but never disagree with them (the property tests in
`tests/unit/ingest/test_ingest_fastpath.py` hold both paths to the same outcome).

On success the document is `data` itself, changed in place: timestamp normalised, id filled in.
"""

from __future__ import annotations

from typing import Any

from ingest.ids import content_id
from ingest.schema import MAX_ORDINAL, MAX_RECORD_ID_CHARS, parse_timestamp

__all__ = ["accept_event", "accept_query"]

Accepted = tuple[str, dict[str, Any]]


def accept_event(data: dict[str, Any]) -> Accepted | None:
    """`data` as a `UbiEvent` would store it, with its id; None when unsure."""
    attributes = data.get("event_attributes")
    if not (
        type(data.get("action_name")) is str
        and _optional_id(data.get("query_id"))
        and _optional_text(data.get("client_id"))
        and _optional_text(data.get("message_type"))
        and type(attributes) is dict
        and _event_attributes(attributes)
    ):
        return None
    timestamp = _timestamp(data.get("timestamp"))
    if timestamp is None:
        return None
    data["timestamp"] = timestamp
    event_id = attributes.get("event_id")
    if event_id is None:  # the id of the content as sent, before the id is filled in
        event_id = attributes["event_id"] = content_id(data)
    return event_id, data


def accept_query(data: dict[str, Any]) -> Accepted | None:
    """`data` as a `UbiQuery` would store it, with its id; None when unsure."""
    if not (
        type(data.get("user_query")) is str
        and _optional_id(data.get("query_id"))
        and _optional_text(data.get("client_id"))
        and _optional_text(data.get("application"))
        and _hit_ids(data)
        and type(data.get("query_attributes", _EMPTY)) is dict
    ):
        return None
    timestamp = _timestamp(data.get("timestamp"))
    if timestamp is None:
        return None
    data["timestamp"] = timestamp
    query_id = data.get("query_id")
    if query_id is None:
        query_id = data["query_id"] = content_id(data)
    return query_id, data


_EMPTY: dict[str, Any] = {}


def _event_attributes(attributes: dict[str, Any]) -> bool:
    target = attributes.get("object")
    position = attributes.get("position")
    return (
        type(target) is dict
        and _is_id(target.get("object_id"))
        and _optional_text(target.get("object_id_field"))
        and (position is None or (type(position) is dict and _ordinal(position.get("ordinal"))))
        and _optional_id(attributes.get("event_id"))
        and _optional_text(attributes.get("session_id"))
    )


def _hit_ids(data: dict[str, Any]) -> bool:
    if "query_response_hit_ids" not in data:
        return True
    hits = data["query_response_hit_ids"]
    return type(hits) is list and all(_is_id(hit) for hit in hits)


def _timestamp(value: Any) -> str | None:
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def _is_id(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_RECORD_ID_CHARS


def _optional_id(value: Any) -> bool:
    return value is None or (type(value) is str and 0 < len(value) <= MAX_RECORD_ID_CHARS)


def _optional_text(value: Any) -> bool:
    return value is None or type(value) is str


def _ordinal(value: Any) -> bool:
    return value is None or (type(value) is int and 0 <= value <= MAX_ORDINAL)
