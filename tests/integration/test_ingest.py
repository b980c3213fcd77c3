"""The ingest worker against the real Kafka and OpenSearch: every valid record stored exactly
once (duplicates redelivered), every invalid one on its DLQ with a reason, offsets committed."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from opensearchpy import helpers

from clicktune.cli.ingest import build_worker, read_status
from clicktune.clients import kafka_options
from clicktune.config import Settings
from ingest.ids import content_id
from tests.integration.ingest_support import dead_letters, drop_ingest_state

pytestmark = pytest.mark.integration

N_QUERIES, N_EVENTS, N_DUPLICATES = 500, 1500, 300
TIMESTAMP = "2025-06-01T12:00:00Z"


@pytest.fixture()
def ingest_settings(services: Settings, unique: str, opensearch: Any) -> Iterator[Settings]:
    ingest = services.ingest.model_copy(
        update={
            "queries_topic": f"test.{unique}.queries",
            "events_topic": f"test.{unique}.events",
            "queries_index": f"test_{unique}_queries",
            "events_index": f"test_{unique}_events",
            "group_id": f"test-{unique}",
            "batch_size": 500,
            "progress_interval_s": 1.0,
        }
    )
    settings = services.model_copy(update={"ingest": ingest})
    yield settings
    drop_ingest_state(opensearch, settings, f"test_{unique}_*")


def _query(i: int) -> dict[str, Any]:
    record = {
        "timestamp": TIMESTAMP,
        "client_id": f"c{i % 40}",
        "user_query": f"drill {i}",
        "query_response_hit_ids": [f"d{i}", f"d{i + 1}"],
        "application": "test",
        "query_attributes": {"session_id": f"s{i}", "arm": "a"},
    }
    if i % 5:  # every fifth query comes without an id: the worker derives one from its content
        record["query_id"] = f"q{i}"
    return record


def _event(i: int) -> dict[str, Any]:
    attributes = {
        "object": {"object_id": f"d{i}", "object_id_field": "_id"},
        "position": {"ordinal": i % 10},
        "session_id": f"s{i}",
    }
    if i % 7:
        attributes["event_id"] = f"e{i}"
    return {
        "action_name": "click",
        "query_id": f"q{i % N_QUERIES}",
        "client_id": "c1",
        "timestamp": 1_748_779_200_000 + i,
        "event_attributes": attributes,
        "unknown_extra": {"kept": True},
    }


def _invalid(i: int, max_bytes: int) -> bytes:
    bad = [
        b"not json at all",
        json.dumps(
            {
                "action_name": "click",
                "timestamp": TIMESTAMP,
                "event_attributes": {"object": {"object_id": "d1"}, "position": {"ordinal": "3"}},
            }
        ).encode(),
        json.dumps(
            {"action_name": "click", "timestamp": TIMESTAMP, "event_attributes": {"object": "d1"}}
        ).encode(),
        json.dumps(
            {
                "action_name": "click",
                "timestamp": "last tuesday",
                "event_attributes": {"object": {"object_id": "d1"}},
            }
        ).encode(),
        b'{"action_name": "click", "padding": "' + b"x" * max_bytes + b'"}',
    ]
    # A distinct suffix keeps every invalid record's bytes unique.
    return bad[i % len(bad)] + b" " * (i // len(bad))


def _produce(settings: Settings) -> tuple[set[str], set[str], set[bytes]]:
    """Produce the records; return the expected query ids, event ids and invalid values."""
    s = settings.ingest
    producer = KafkaProducer(**kafka_options(settings.kafka), acks="all", enable_idempotence=True)
    sent: list[tuple[str, bytes]] = []
    query_ids, event_ids = set(), set()
    for i in range(N_QUERIES):
        record = _query(i)
        query_ids.add(record.get("query_id") or _derived_query_id(record))
        sent.append((s.queries_topic, json.dumps(record).encode()))
    for i in range(N_EVENTS):
        record = _event(i)
        event_ids.add(record["event_attributes"].get("event_id") or _derived_event_id(record))
        sent.append((s.events_topic, json.dumps(record).encode()))
    rng = random.Random(7)
    sent += rng.sample(sent, N_DUPLICATES)  # redeliveries: identical bytes again
    invalid = {_invalid(i, s.max_record_bytes) for i in range(50)}
    sent += [(rng.choice([s.queries_topic, s.events_topic]), value) for value in invalid]
    rng.shuffle(sent)
    for topic, value in sent:
        producer.send(topic, value=value)
    producer.flush()
    producer.close()
    return query_ids, event_ids, invalid


def _derived_query_id(record: dict[str, Any]) -> str:
    return content_id({**record, "timestamp": "2025-06-01T12:00:00.000Z"})


def _derived_event_id(record: dict[str, Any]) -> str:
    from ingest.schema import parse_timestamp

    return content_id({**record, "timestamp": parse_timestamp(record["timestamp"])})


def _stored_ids(opensearch: Any, index: str) -> list[str]:
    opensearch.indices.refresh(index=index)
    return [hit["_id"] for hit in helpers.scan(opensearch, index=index, _source=False)]


def test_every_valid_record_stored_once_and_every_invalid_one_dead_lettered(
    ingest_settings: Settings, opensearch: Any
) -> None:
    s = ingest_settings.ingest
    with build_worker(ingest_settings) as worker:
        worker.setup()  # topics exist before producing
        query_ids, event_ids, invalid = _produce(ingest_settings)
        started = time.monotonic()
        stats = worker.run(max_idle_s=4)
        elapsed = time.monotonic() - started - 4

    total = N_QUERIES + N_EVENTS + N_DUPLICATES + len(invalid)
    print(
        f"\ningest: {stats.read} records in {elapsed:.1f} s = {stats.read / elapsed:.0f} "
        f"records/s; {stats.batches} batches, {stats.retries} retries"
    )
    assert stats.read == total
    assert stats.dead_lettered == len(invalid)

    stored_queries = _stored_ids(opensearch, s.queries_index)
    stored_events = _stored_ids(opensearch, s.events_index)
    assert sorted(stored_queries) == sorted(query_ids)  # each once, duplicates overwrote
    assert sorted(stored_events) == sorted(event_ids)
    sample = opensearch.get(index=s.events_index, id="e1")["_source"]
    assert sample["unknown_extra"] == {"kept": True}
    assert sample["timestamp"] == "2025-06-01T12:00:00.001Z"

    letters = dead_letters(ingest_settings)
    assert {letter.value for letter in letters} == invalid
    for letter in letters:
        headers = dict(letter.headers)
        assert headers["reason"]
        assert headers["source_topic"].decode() in (s.queries_topic, s.events_topic)
        assert int(headers["source_offset"]) >= 0
    reasons = {dict(letter.headers)["reason"].decode() for letter in letters}
    assert any(r.startswith("event_attributes.position.ordinal: '3' is invalid") for r in reasons)

    status = read_status(ingest_settings)
    assert status.total_lag == 0
    assert sum(status.dlq_records.values()) == len(invalid)
