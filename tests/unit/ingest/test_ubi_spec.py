"""UBI 1.3.0 conformance of validation: every spec-valid record is stored, ids as sent.

Records come from the published schemas themselves (`tests/ubi_spec_records.py`); the spec's
samples, which its own schemas would refuse, are stored too. The same records go through the
real Kafka and OpenSearch in `tests/integration/test_ubi_conformance.py`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from ingest.ids import canonical_json
from ingest.schema import ESCAPED, EVENT_LEVELS, QUERY_LEVELS, escape_keys
from ingest.validate import RecordKind, Rejection, ValidRecord, validate_record
from tests.ubi_spec_records import sample, spec_records

pytestmark = pytest.mark.unit

MAX = 1024 * 1024
RECEIVED_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
KINDS = {"event": RecordKind.EVENT, "query": RecordKind.QUERY}
SPEC_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


def store(record: dict[str, Any], kind: RecordKind) -> ValidRecord | Rejection:
    raw = json.dumps(record).encode("utf-8", "surrogatepass")
    return validate_record(raw, kind, MAX, RECEIVED_MS)


def _stored_as_sent(
    record: dict[str, Any], result: ValidRecord | Rejection, levels: dict[str, Any]
) -> None:
    """Every field of `record` is in the stored source unchanged (only timestamps normalised;
    keys OpenSearch cannot parse at a mapped level kept under `clicktune_escaped` there)."""
    assert isinstance(result, ValidRecord), result
    assert 0 < len(result.record_id.encode()) <= 512
    source = result.document()
    record = escape_keys(record, levels)
    json.dumps(source, allow_nan=False).encode("utf-8")  # sendable to OpenSearch as it is
    for key, value in record.items():  # every field kept; only timestamps are normalised
        if key != "timestamp":
            assert canonical_json(source[key]) == canonical_json(value), key


@SPEC_SETTINGS
@given(record=spec_records("event"))
def test_every_spec_valid_event_is_stored_with_its_fields_as_sent(record: dict[str, Any]) -> None:
    sent = json.loads(json.dumps(record))
    result = store(record, RecordKind.EVENT)
    _stored_as_sent(_without_filled_id(sent, result), result, EVENT_LEVELS)


@SPEC_SETTINGS
@given(record=spec_records("query"))
def test_every_spec_valid_query_is_stored_with_its_fields_as_sent(record: dict[str, Any]) -> None:
    sent = json.loads(json.dumps(record))
    result = store(record, RecordKind.QUERY)
    _stored_as_sent(sent, result, QUERY_LEVELS)
    assert result.document()["timestamp"]  # sent or stamped on receipt


def _without_filled_id(record: dict[str, Any], result: ValidRecord | Rejection) -> dict[str, Any]:
    """The record as sent, compared without the event id the store fills in (a new key)."""
    if isinstance(result, ValidRecord) and isinstance(record.get("event_attributes"), dict):
        source_attributes = result.document()["event_attributes"]
        if "event_id" not in record["event_attributes"]:
            record = {**record, "event_attributes": {**record["event_attributes"]}}
            record["event_attributes"]["event_id"] = source_attributes["event_id"]
    return record


def test_integer_object_ids_are_kept_as_integers() -> None:
    record = {
        "action_name": "click",
        "query_id": "q1",
        "timestamp": "2025-06-01T12:00:00Z",
        "event_attributes": {"object": {"object_id": 12345, "internal_id": 7}},
    }
    result = store(record, RecordKind.EVENT)
    assert isinstance(result, ValidRecord)
    assert result.document()["event_attributes"]["object"] == {"object_id": 12345, "internal_id": 7}


def test_the_specs_sample_event_is_stored_as_it_is() -> None:
    record = sample("event-opensearch.json")  # page_exit: no client_id, no object id
    result = store(record, RecordKind.EVENT)
    assert isinstance(result, ValidRecord), result
    source = result.document()
    assert source["action_name"] == "page_exit"
    assert source["event_attributes"]["object"]["idleTimeoutMs"] == 5000
    assert source["event_attributes"]["position"] == {}
    assert source["page_id"] == "/docs/latest/"


@pytest.mark.parametrize(
    ("name", "query_id", "user_query", "engine_query"),
    [
        ("query-opensearch.json", "12300d16cb-b6f1-4012-93ebcc49cac90426", "Toner", '{"match"'),
        ("query-solr.json", "xyz890", "RAM memory", "ram OR memory"),
    ],
)
def test_the_specs_sample_search_requests_are_stored_as_ubi_queries(
    name: str, query_id: str, user_query: str, engine_query: str
) -> None:
    result = store(sample(name), RecordKind.QUERY)
    assert isinstance(result, ValidRecord), result
    source = result.document()
    assert result.record_id == source["query_id"] == query_id
    assert source["user_query"] == user_query
    assert source["query"].startswith(engine_query)
    assert source["timestamp"] == "2026-01-01T00:00:00.000Z"  # stamped on receipt
    assert "ubi" not in source


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2018-11-13T20:20:39", "2018-11-13T20:20:39.000Z"),  # the spec's own example
        ("2018-11-13t20:20:39z", "2018-11-13T20:20:39.000Z"),
        ("1998-12-31T23:59:60Z", "1998-12-31T23:59:59.999Z"),  # a leap second
        ("0001-01-01T00:30:00+01:00", "0001-01-01T00:30:00.000+01:00"),  # UTC would be year 0
        ("9999-12-31T23:59:59-14:00", "9999-12-31T23:59:59.000-14:00"),
    ],
)
def test_any_rfc3339_instant_is_stored(sent: str, stored: str) -> None:
    record = {"action_name": "view", "timestamp": sent}
    result = store(record, RecordKind.EVENT)
    assert isinstance(result, ValidRecord), result
    assert result.document()["timestamp"] == stored


def test_an_event_id_that_cannot_be_an_opensearch_id_is_kept_and_another_used() -> None:
    record = {
        "action_name": "click",
        "timestamp": "2025-06-01T12:00:00Z",
        "event_attributes": {"event_id": "", "object": {"object_id": "d1"}},
    }
    result = store(record, RecordKind.EVENT)
    assert isinstance(result, ValidRecord)
    assert len(result.record_id) == 32
    assert result.document()["event_attributes"]["event_id"] == ""


def test_keys_opensearch_cannot_parse_at_a_mapped_level_are_kept_aside_unchanged() -> None:
    record = {
        "action_name": "click",
        "timestamp": "2025-06-01T12:00:00Z",
        "": "empty",
        "a.b": 1,
        "event_attributes": {"..": [1], "object": {"object_id": "d1", "x.y": {"": 2}}},
        "free": {"": 3, "a..b": 4},  # below an unmapped key OpenSearch parses nothing
    }
    result = store(record, RecordKind.EVENT)
    assert isinstance(result, ValidRecord)
    source = result.document()
    assert source[ESCAPED] == {"": "empty", "a.b": 1}
    assert source["event_attributes"][ESCAPED] == {"..": [1]}
    assert source["event_attributes"]["object"] == {"object_id": "d1", ESCAPED: {"x.y": {"": 2}}}
    assert source["free"] == {"": 3, "a..b": 4}
    assert "" not in source and "a.b" not in source
