"""UBI 1.3.0 conformance against the real Kafka and OpenSearch: records generated from the
published schemas, and the specification's own samples, are all stored, none dead-lettered;
ids keep their value and are searchable as strings; the tuner reads the indexes and skips, with a
count, what it cannot train on."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer

from clicktune.cli.ingest import build_worker
from clicktune.clients import kafka_options
from clicktune.config import Settings
from ingest.validate import RecordKind, ValidRecord, validate_record
from tests.integration import ingest_support
from tests.integration.ingest_support import dead_letters
from tests.ubi_spec_records import SAMPLES, sample, spec_records
from tuner.sessions import read_sessions

pytestmark = pytest.mark.integration

N_PER_KIND = 250
SENT_MS = 1_767_225_600_000  # the Kafka timestamp of every record: stamps queries without one


ingest_settings = ingest_support.ingest_settings  # the fixture: the test's own topics, indexes


def drawn(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """`n` examples of `strategy` as hypothesis generates them (simple ones and odd ones)."""
    found: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


def integer_id_click() -> dict[str, Any]:
    return {
        "action_name": "click",
        "query_id": "q-int",
        "timestamp": "2026-01-01T00:00:01Z",
        "event_attributes": {"object": {"object_id": 12345}, "position": {"ordinal": 0}},
    }


def odd_keys_event() -> dict[str, Any]:
    """Valid under the spec (any key is allowed), refused by OpenSearch at a mapped level."""
    return {
        "action_name": "click",
        "timestamp": "2026-01-01T00:00:02Z",
        "": 1,
        ".": 2,
        "a..b": 3,
        "event_attributes": {"": 4, "object": {"object_id": "d1", ".x": 5}, "position": {"": 6}},
    }


def integer_id_query() -> dict[str, Any]:
    return {"query_id": "q-int", "user_query": "toner", "query_response_hit_ids": ["12345"]}


def test_spec_valid_records_and_the_specs_samples_are_all_stored(
    ingest_settings: Settings, opensearch: Any
) -> None:
    s = ingest_settings.ingest
    records = {
        RecordKind.EVENT: [
            *drawn(spec_records("event"), N_PER_KIND),
            integer_id_click(),
            odd_keys_event(),
        ],
        RecordKind.QUERY: [*drawn(spec_records("query"), N_PER_KIND), integer_id_query()],
    }
    records[RecordKind.EVENT] += [sample(name) for name in SAMPLES["event"]]
    records[RecordKind.QUERY] += [sample(name) for name in SAMPLES["query"]]
    topics = {RecordKind.EVENT: s.events_topic, RecordKind.QUERY: s.queries_topic}
    indexes = {RecordKind.EVENT: s.events_index, RecordKind.QUERY: s.queries_index}
    expected: dict[RecordKind, set[str]] = {kind: set() for kind in records}

    with build_worker(ingest_settings) as worker:
        worker.setup()
        producer = KafkaProducer(**kafka_options(ingest_settings.kafka), acks="all")
        for kind, batch in records.items():
            for record in batch:
                raw = json.dumps(record).encode("utf-8", "surrogatepass")
                result = validate_record(raw, kind, s.max_record_bytes, SENT_MS)
                assert isinstance(result, ValidRecord), (record, result)
                expected[kind].add(result.record_id)
                producer.send(topics[kind], value=raw, timestamp_ms=SENT_MS)
        producer.flush()
        producer.close()
        stats = worker.run(max_idle_s=4)

    sent = sum(len(batch) for batch in records.values())
    letters = [
        (m.value[:300], dict(m.headers).get("reason")) for m in dead_letters(ingest_settings)
    ]
    assert letters == []
    assert (stats.read, stats.dead_lettered) == (sent, 0)
    for kind, ids in expected.items():
        opensearch.indices.refresh(index=indexes[kind])
        found = opensearch.mget(index=indexes[kind], body={"ids": sorted(ids)}, _source=False)
        missing = [doc["_id"] for doc in found["docs"] if not doc.get("found")]
        assert missing == [], f"{len(missing)} of {len(ids)} {kind.value} records not stored"

    hits = opensearch.search(
        index=s.events_index,
        body={"query": {"term": {"event_attributes.object.object_id": "12345"}}},
    )["hits"]["hits"]
    assert [h["_source"]["event_attributes"]["object"]["object_id"] for h in hits] == [12345]
    toner = opensearch.get(index=s.queries_index, id="12300d16cb-b6f1-4012-93ebcc49cac90426")
    assert toner["_source"]["user_query"] == "Toner"

    sessions = read_sessions(opensearch, s)  # whatever the spec let clients put there
    (int_session,) = [x for x in sessions if x.query_id == "q-int"]
    assert [a.object_id for a in int_session.actions] == ["12345"]
