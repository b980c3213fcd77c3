"""The worker loop with fake clients: commit only after OpenSearch acknowledged, DLQ the bad."""

from __future__ import annotations

import gc
import json
import threading
from typing import Any

from kafka.errors import KafkaTimeoutError
from opensearchpy.exceptions import ConnectionError as OSConnectionError

import ingest.errors
import ingest.worker
from ingest.config import IngestSettings
from ingest.dlq import DeadLetterQueue, SourceRecord
from ingest.runtime import fewer_gc_pauses
from ingest.worker import IngestWorker
from tests.unit.ingest.ingest_fakes import FakeBulkClient, FakeConsumer, FakeProducer, Message

SETTINGS = IngestSettings(initial_backoff_s=0.001, max_backoff_s=0.002)
EVENT = {
    "action_name": "click",
    "timestamp": "2025-06-01T12:00:00Z",
    "event_attributes": {"object": {"object_id": "d1"}, "event_id": "e1"},
}


class FakeTemplates:
    def put_index_template(self, name: str, body: Any) -> None:
        pass


class FakeOpenSearch(FakeBulkClient):
    indices = FakeTemplates()


def message(offset: int, value: bytes, topic: str = "ubi.events") -> Message:
    return Message(topic, 0, offset, value)


def good(offset: int) -> Message:
    record = json.loads(json.dumps(EVENT))
    record["event_attributes"]["event_id"] = f"e{offset}"
    return message(offset, json.dumps(record).encode())


def test_valid_records_are_stored_and_offsets_committed_after_the_write() -> None:
    consumer, producer, store = FakeConsumer([[good(0), good(1)]]), FakeProducer(), FakeOpenSearch()
    stats = IngestWorker(consumer, producer, store, SETTINGS).run(max_idle_s=0.01)
    assert set(store.stored) == {("ubi_events", "e0"), ("ubi_events", "e1")}
    [commit] = consumer.commits
    assert [meta.offset for meta in commit.values()] == [2]
    assert (stats.read, stats.written, stats.dead_lettered, stats.batches) == (2, 2, 0, 1)
    assert producer.sent == []


def test_invalid_record_goes_to_the_dlq_and_does_not_stop_the_batch() -> None:
    consumer = FakeConsumer([[good(0), message(1, b"oops"), good(2)]])
    producer, store = FakeProducer(), FakeOpenSearch()
    stats = IngestWorker(consumer, producer, store, SETTINGS).run(max_idle_s=0.01)
    [letter] = producer.sent
    assert letter["topic"] == "ubi.events.dlq" and letter["value"] == b"oops"
    assert letter["headers"]["reason"].startswith(b"not JSON")
    assert letter["headers"]["source_offset"] == b"1"
    assert len(store.stored) == 2 and stats.dead_lettered == 1
    assert [meta.offset for meta in consumer.commits[0].values()] == [3]


def test_opensearch_down_keeps_the_batch_and_commits_only_after_it_is_written() -> None:
    down = OSConnectionError("N/A", "connection refused", None)
    consumer, store = FakeConsumer([[good(0)]]), FakeOpenSearch([down, down, None])
    stats = IngestWorker(consumer, FakeProducer(), store, SETTINGS).run(max_idle_s=0.01)
    assert len(store.calls) == 3 and ("ubi_events", "e0") in store.stored
    assert len(consumer.commits) == 1
    assert stats.retries == 2


def test_stop_during_an_outage_exits_without_committing() -> None:
    down = OSConnectionError("N/A", "connection refused", None)
    consumer = FakeConsumer([[good(0)]])
    store = FakeOpenSearch([down] * 1000)
    settings = IngestSettings(initial_backoff_s=0.05, max_backoff_s=0.05)
    worker = IngestWorker(consumer, FakeProducer(), store, settings)
    threading.Timer(0.2, worker.stop).start()
    stats = worker.run()
    assert consumer.commits == [] and stats.batches == 0


def test_dlq_send_failure_is_retryable() -> None:
    producer = FakeProducer(fail_with=KafkaTimeoutError("no ack"))
    letter = (SourceRecord("ubi.events", 0, 5, None, b"x"), "bad")
    try:
        DeadLetterQueue(producer).publish([letter])
    except ingest.errors.BrokerUnavailable as exc:
        assert "1 dead letters" in str(exc)
    else:
        raise AssertionError("expected BrokerUnavailable")


def test_public_names_are_listed() -> None:
    for module in (ingest.errors, ingest.worker):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_metrics_count_by_topic_and_show_the_lag_after_commit() -> None:
    from kafka.structs import TopicPartition
    from prometheus_client import generate_latest

    from ingest.metrics import IngestMetrics, parse_metrics

    consumer = FakeConsumer([[good(0), message(1, b"oops"), good(2)]])
    consumer.end_offsets[TopicPartition("ubi.events", 0)] = 10
    metrics = IngestMetrics()
    worker = IngestWorker(consumer, FakeProducer(), FakeOpenSearch(), SETTINGS, metrics=metrics)
    worker.run(max_idle_s=0.01)
    snapshot = parse_metrics(generate_latest(metrics.registry).decode())
    assert snapshot.read == {"ubi.events": 3}
    assert snapshot.written == {"ubi.events": 2}
    assert snapshot.dead_lettered == {"ubi.events": 1}
    assert snapshot.lag == {"ubi.events[0]": 7}  # end offset 10, committed 3


def test_gc_runs_less_often_while_inside_and_as_before_after() -> None:
    before = gc.get_threshold()
    with fewer_gc_pauses(20_000):
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_freeze_count() > 0  # start-up objects are left out of collections
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    with fewer_gc_pauses(0):
        assert gc.get_threshold() == before


class RevokingConsumer(FakeConsumer):
    """A rebalance took the partition away between reading a batch and measuring its lag."""

    def highwater(self, partition: object) -> int | None:
        from kafka.errors import IllegalStateError

        raise IllegalStateError("Partition is not assigned")


def test_a_partition_revoked_mid_batch_does_not_crash_the_worker() -> None:
    consumer = RevokingConsumer([[good(0), good(1)]])
    producer, store = FakeProducer(), FakeOpenSearch()
    stats = IngestWorker(consumer, producer, store, SETTINGS).run(max_idle_s=0.01)
    assert set(store.stored) == {("ubi_events", "e0"), ("ubi_events", "e1")}
    assert stats.written == 2 and len(consumer.commits) == 1
