"""Validation of UBI records: what is stored, what is refused and why, and that nothing raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.ids import content_id
from ingest.validate import RecordKind, Rejection, ValidRecord, validate_record

MAX = 64 * 1024


def event(**overrides: Any) -> dict[str, Any]:
    record = {
        "action_name": "click",
        "query_id": "q1",
        "client_id": "c1",
        "timestamp": "2025-06-01T12:00:00Z",
        "event_attributes": {
            "object": {"object_id": "doc-7", "object_id_field": "_id"},
            "position": {"ordinal": 2},
            "event_id": "e1",
            "session_id": "s1",
        },
    }
    record.update(overrides)
    return record


def query(**overrides: Any) -> dict[str, Any]:
    record = {
        "query_id": "q1",
        "timestamp": "2025-06-01T12:00:00Z",
        "client_id": "c1",
        "user_query": "cordless drill",
        "query_response_hit_ids": ["d1", "d2"],
        "application": "shop",
        "query_attributes": {"session_id": "s1", "arm": "a", "model_version": "v2"},
    }
    record.update(overrides)
    return record


def check(record: Any, kind: RecordKind = RecordKind.EVENT) -> Any:
    raw = record if isinstance(record, bytes) else json.dumps(record).encode()
    return validate_record(raw, kind, MAX)


def test_valid_event_is_stored_as_sent_with_extra_fields_kept() -> None:
    record = event(browser="firefox")
    record["event_attributes"]["dwell_time"] = 3.5
    result = check(record)
    assert isinstance(result, ValidRecord)
    assert result.record_id == "e1"
    document = result.document()
    assert document["browser"] == "firefox"
    assert document["event_attributes"]["dwell_time"] == 3.5
    assert document["event_attributes"]["object"]["object_id"] == "doc-7"
    assert document["timestamp"] == "2025-06-01T12:00:00.000Z"


def test_valid_query_keeps_hits_in_order_and_attributes() -> None:
    result = check(query(), RecordKind.QUERY)
    assert isinstance(result, ValidRecord)
    assert result.record_id == "q1"
    assert result.document()["query_response_hit_ids"] == ["d1", "d2"]
    assert result.document()["query_attributes"]["arm"] == "a"


def test_epoch_millis_and_iso_timestamps_are_the_same_instant() -> None:
    millis = int(datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp() * 1000)
    from_millis = check(event(timestamp=millis)).document()["timestamp"]
    from_iso = check(event(timestamp="2025-06-01T14:00:00+02:00")).document()["timestamp"]
    assert from_millis == from_iso == "2025-06-01T12:00:00.000Z"


def test_record_without_id_gets_the_same_id_on_redelivery() -> None:
    record = event()
    del record["event_attributes"]["event_id"]
    first, again = check(record), check(json.loads(json.dumps(record)))
    assert first.record_id == again.record_id
    assert len(first.record_id) == 32
    assert first.document()["event_attributes"]["event_id"] == first.record_id
    other = check({**record, "action_name": "purchase"})
    assert other.record_id != first.record_id


def test_query_without_id_gets_an_id_from_its_content() -> None:
    record = query()
    del record["query_id"]
    result = check(record, RecordKind.QUERY)
    expected = content_id({**record, "timestamp": "2025-06-01T12:00:00.000Z"})
    assert result.record_id == expected
    assert result.document()["query_id"] == expected


def test_content_id_ignores_key_order() -> None:
    assert content_id({"a": 1, "b": [1, 2]}) == content_id({"b": [1, 2], "a": 1})


def _with_attribute(path: str, value: Any) -> dict[str, Any]:
    record = event()
    node = record
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return record


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (
            _with_attribute("event_attributes.position.ordinal", 1.5),
            "event_attributes.position.ordinal: 1.5 is invalid",
        ),
        (
            _with_attribute("event_attributes.position.ordinal", "3"),
            "event_attributes.position.ordinal: '3' is invalid",
        ),
        (
            _with_attribute("event_attributes.object", "doc-7"),
            "event_attributes.object: 'doc-7' is invalid",
        ),
        (
            _with_attribute("event_attributes.object.object_id", 7.5),
            "event_attributes.object.object_id: 7.5 is neither a string nor an integer",
        ),
        (event(client_id=42), "client_id: 42 is invalid"),
        (event(timestamp=5), "timestamp: 5 as epoch milliseconds is not between 2000-01-01"),
        (
            event(timestamp="last tuesday"),
            "timestamp: 'last tuesday' is neither ISO-8601 text nor epoch milliseconds",
        ),
        (event(timestamp=True), "timestamp: True is neither"),
        (b"{not json", "not JSON: "),
        (b"[1, 2]", "not a JSON object: got a JSON list"),
        (b'{"x": NaN}', "not JSON: NaN is not a JSON number"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b'{"x": "\\ud800"}', "not UTF-8 text"),
        (b"", "empty record"),
    ],
)
def test_invalid_records_are_refused_with_a_reason_naming_field_and_rule(
    record: Any, reason: str
) -> None:
    result = check(record)
    assert isinstance(result, Rejection)
    assert result.reason.startswith(reason), result.reason


def test_any_instant_as_text_is_stored_but_epoch_millis_must_be_plausible() -> None:
    # UBI's date-time has no range; milliseconds are clicktune's extension, checked against
    # seconds sent as milliseconds.
    ahead = datetime.now(UTC) + timedelta(days=2)
    assert isinstance(check(event(timestamp=ahead.isoformat())), ValidRecord)
    result = check(event(timestamp=int(ahead.timestamp() * 1000)))
    assert isinstance(result, Rejection)
    assert "as epoch milliseconds is not between" in result.reason


def test_oversize_record_is_refused_naming_its_size() -> None:
    raw = json.dumps(event(padding="x" * 70_000)).encode()
    result = validate_record(raw, RecordKind.EVENT, 65536)
    assert result == Rejection(f"record of {len(raw)} bytes is over max_record_bytes=65536")


def _outcome_is_sound(result: Any) -> None:
    if isinstance(result, Rejection):
        assert result.reason
    else:
        # Whatever validates must be sendable to OpenSearch as strict JSON.
        json.dumps(result.document(), allow_nan=False).encode("utf-8")
        assert 0 < len(result.record_id) <= 512


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=512), kind=st.sampled_from(list(RecordKind)))
def test_arbitrary_bytes_never_raise(raw: bytes, kind: RecordKind) -> None:
    _outcome_is_sound(validate_record(raw, kind, MAX))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
paths = st.sampled_from(
    [
        ("timestamp",),
        ("action_name",),
        ("query_id",),
        ("event_attributes",),
        ("event_attributes", "object"),
        ("event_attributes", "object", "object_id"),
        ("event_attributes", "position"),
        ("event_attributes", "position", "ordinal"),
        ("event_attributes", "event_id"),
        ("extra",),
    ]
)


@settings(max_examples=200, deadline=None)
@given(path=paths, value=json_values, drop=st.booleans())
def test_mutated_valid_events_never_raise(path: tuple[str, ...], value: Any, drop: bool) -> None:
    record = event()
    node = record
    for part in path[:-1]:
        node = node[part]
    if drop:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    _outcome_is_sound(check(record))
