"""The hand-written fast path and the pydantic models must give every record the same outcome.

`validate_record` (fast path first) is held to `validate_with_models` (the reference) on
generated records, valid and invalid: the same id and document for what is stored, the same
reason for what is refused.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.fastpath import accept_event, accept_query
from ingest.ids import canonical_json
from ingest.schema import parse_timestamp
from ingest.validate import (
    RecordKind,
    Rejection,
    ValidRecord,
    validate_record,
    validate_with_models,
)
from tests.ubi_spec_records import json_values, spec_records

MAX = 64 * 1024
NOW_MS = int(datetime.now(UTC).timestamp() * 1000)
RECEIVED_MS = 1_767_225_600_000

valid_ids = st.text(min_size=1, max_size=6) | st.sampled_from(["x" * 512, "é" * 512])
ids = st.integers(0, 5).flatmap(lambda n: valid_ids if n else st.sampled_from(["", "x" * 513]))
texts = st.text(max_size=6)
valid_timestamps = st.one_of(
    st.integers(min_value=946_684_800_000, max_value=NOW_MS),
    st.integers(min_value=946_684_800_000, max_value=NOW_MS).map(str),
    st.sampled_from(
        [
            "2025-06-01T12:00:00Z",
            "2025-06-01T12:00:00.123456Z",
            " 2025-06-01T14:00:00+02:00 ",
            "2025-06-01T12:00:00",
            "2025-06-01",
        ]
    ),
    st.floats(min_value=946_684_800_000, max_value=NOW_MS),
)
odd_timestamps = st.one_of(
    st.integers(min_value=946_684_800_000 - 5, max_value=946_684_800_005),
    st.integers(min_value=-(10**21), max_value=NOW_MS),
    st.integers(min_value=NOW_MS + 2 * 86_400_000, max_value=10**21),
    st.floats(allow_nan=False),
    st.sampled_from(["1999-12-31T23:59:59Z", "9999-12-31T23:59:59Z", "last tuesday", "", "²"]),
    st.booleans(),
    st.none(),
    json_values,
)
timestamps = st.integers(0, 3).flatmap(lambda n: valid_timestamps if n else odd_timestamps)


def mostly(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """19 times in 20 a value of the right shape, else any JSON value."""
    return st.integers(0, 19).flatmap(lambda n: valid if n else json_values)


def record(
    required: dict[str, st.SearchStrategy[Any]],
    optional: dict[str, st.SearchStrategy[Any]],
) -> st.SearchStrategy[dict[str, Any]]:
    """The fields of `required` (one left out one time in 20), some of `optional`, and up to
    two unknown fields."""
    known = st.fixed_dictionaries(required, optional=optional)
    names = sorted(required)
    left_out = st.integers(0, 19).flatmap(
        lambda n: st.sampled_from(names) if names and not n else st.none()
    )
    extras = st.dictionaries(st.sampled_from(["browser", "_x", "model_config", "a.b"]), json_values)
    return st.builds(
        lambda k, e, out: {key: v for key, v in {**e, **k}.items() if key != out},
        known,
        extras,
        left_out,
    )


objects = record({"object_id": mostly(ids)}, {"object_id_field": mostly(st.none() | texts)})
positions = record({}, {"ordinal": mostly(st.none() | st.integers(min_value=-2, max_value=2**31))})
attributes = record(
    {"object": mostly(objects)},
    {
        "position": mostly(st.none() | positions),
        "event_id": mostly(st.none() | ids),
        "session_id": mostly(st.none() | texts),
    },
)
events = record(
    {
        "action_name": mostly(texts),
        "timestamp": timestamps,
        "event_attributes": mostly(attributes),
    },
    {
        "query_id": mostly(st.none() | ids),
        "client_id": mostly(st.none() | texts),
        "message_type": mostly(st.none() | texts),
    },
)
queries = record(
    {"timestamp": timestamps, "user_query": mostly(texts)},
    {
        "query_id": mostly(st.none() | ids),
        "client_id": mostly(st.none() | texts),
        "query_response_hit_ids": mostly(st.lists(mostly(ids), max_size=3)),
        "application": mostly(st.none() | texts),
        "query_attributes": mostly(st.dictionaries(st.text(max_size=4), json_values, max_size=3)),
    },
)


def assert_same_outcome(data: dict[str, Any], kind: RecordKind, *, note: bool = True) -> None:
    raw = json.dumps(data).encode()
    if note:  # hypothesis statistics: how often each path decided
        event("fast path" if _accepts(json.loads(raw), kind) else "models")
    fast = validate_record(raw, kind, MAX, RECEIVED_MS)
    reference = validate_with_models(raw, kind, MAX, RECEIVED_MS)
    if isinstance(reference, Rejection):
        if note:
            event("refused")
        assert fast == reference
    else:
        assert isinstance(fast, ValidRecord)
        assert fast.record_id == reference.record_id
        # canonical JSON tells 1 from 1.0 and true, which dict equality does not
        assert canonical_json(fast.source) == canonical_json(reference.document())


@settings(max_examples=400, deadline=None)
@given(data=events)
def test_fast_path_and_models_agree_on_events(data: dict[str, Any]) -> None:
    assert_same_outcome(data, RecordKind.EVENT)


@settings(max_examples=400, deadline=None)
@given(data=queries)
def test_fast_path_and_models_agree_on_queries(data: dict[str, Any]) -> None:
    assert_same_outcome(data, RecordKind.QUERY)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=spec_records("event"))
def test_fast_path_and_models_agree_on_spec_valid_events(data: dict[str, Any]) -> None:
    assert_same_outcome(data, RecordKind.EVENT)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=spec_records("query"))
def test_fast_path_and_models_agree_on_spec_valid_queries(data: dict[str, Any]) -> None:
    assert_same_outcome(data, RecordKind.QUERY)


EVENT_PATHS = [
    ("action_name",),
    ("query_id",),
    ("client_id",),
    ("timestamp",),
    ("message_type",),
    ("event_attributes",),
    ("event_attributes", "object"),
    ("event_attributes", "object", "object_id"),
    ("event_attributes", "object", "object_id_field"),
    ("event_attributes", "position"),
    ("event_attributes", "position", "ordinal"),
    ("event_attributes", "event_id"),
    ("event_attributes", "session_id"),
]
QUERY_PATHS = [
    ("query_id",),
    ("timestamp",),
    ("client_id",),
    ("user_query",),
    ("query_response_hit_ids",),
    ("application",),
    ("query_attributes",),
]
EDGE_VALUES = [None, True, False, 0, -1, 1.0, 2**31 - 1, 2**31, "", "x" * 512, "x" * 513]
EDGE_VALUES += [[], {}, ["", "d"], ["d"], {"object_id": "d"}, {"ordinal": -1}, DROP := object()]
CHANGES = [(RecordKind.EVENT, path) for path in EVENT_PATHS]
CHANGES += [(RecordKind.QUERY, path) for path in QUERY_PATHS]


def changed(kind: RecordKind, path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A well-formed record with the field at `path` set to `value` (or left out: DROP)."""
    data = well_formed_event() if kind is RecordKind.EVENT else well_formed_query()
    node = data
    for part in path[:-1]:
        node = node[part]
    if value is DROP:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(("kind", "path"), CHANGES)
def test_fast_path_and_models_agree_on_edge_values_of_each_field(
    kind: RecordKind, path: tuple[str, ...]
) -> None:
    for value in EDGE_VALUES:
        assert_same_outcome(changed(kind, path, value), kind, note=False)


@pytest.mark.parametrize(("kind", "path"), CHANGES)
@settings(max_examples=40, deadline=None)
@given(value=json_values | timestamps)
def test_fast_path_and_models_agree_on_any_value_of_each_field(
    kind: RecordKind, path: tuple[str, ...], value: Any
) -> None:
    assert_same_outcome(changed(kind, path, value), kind)


def _accepts(data: dict[str, Any], kind: RecordKind) -> bool:
    return (accept_query if kind is RecordKind.QUERY else accept_event)(data) is not None


def well_formed_event() -> dict[str, Any]:
    return {
        "action_name": "click",
        "query_id": "q1",
        "client_id": "c1",
        "timestamp": 1_748_779_200_123,
        "event_attributes": {
            "object": {"object_id": "d7", "object_id_field": "_id"},
            "position": {"ordinal": 3},
            "event_id": "e1",
            "session_id": "s1",
        },
    }


def well_formed_query() -> dict[str, Any]:
    return {
        "query_id": "q1",
        "timestamp": "2025-06-01T12:00:00Z",
        "client_id": "c1",
        "user_query": "cordless drill",
        "query_response_hit_ids": ["d1", "d2"],
        "application": "shop",
        "query_attributes": {"session_id": "s1"},
    }


def test_well_formed_records_take_the_fast_path_with_or_without_ids() -> None:
    # the throughput of the worker rests on this: the common shapes never reach pydantic
    event, query = well_formed_event(), well_formed_query()
    assert accept_event(event) == ("e1", {**event, "timestamp": "2025-06-01T12:00:00.123Z"})
    assert accept_query(query) == ("q1", {**query, "timestamp": "2025-06-01T12:00:00.000Z"})
    anonymous_event, anonymous_query = well_formed_event(), well_formed_query()
    del anonymous_event["event_attributes"]["event_id"], anonymous_query["query_id"]
    assert accept_event(anonymous_event) is not None
    assert accept_query(anonymous_query) is not None
    assert_same_outcome(well_formed_event(), RecordKind.EVENT, note=False)
    assert_same_outcome(well_formed_query(), RecordKind.QUERY, note=False)


@settings(max_examples=300, deadline=None)
@given(millis=st.integers(min_value=946_684_800_000, max_value=NOW_MS))
def test_epoch_millis_are_written_as_datetime_writes_them(millis: int) -> None:
    expected = datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="milliseconds")
    assert parse_timestamp(millis) == expected.replace("+00:00", "Z")
