"""UBI records while Kafka is down: spooled on disk, replayed in order when Kafka is back, none
lost up to the spool's bound; beyond it dropped with a metric and a log line, searches answering."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from serving.api.app import create_app
from serving.api.collector import InMemorySink
from serving.config import ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import QueryLogError
from serving.state.query_log import SpooledQueryLog
from serving.state.spool import Spool, SpoolFullError, SpoolingSink, SpoolReplayer, spool_metrics
from tests.unit.serving.test_app import MemoryIndex


class FlakySink(InMemorySink):
    """An in-memory Kafka that refuses the next `failures` sends (all while `down`)."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.failures, self.down, self.tries = failures, False, 0

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.tries += 1
        if self.down or self.failures > 0:
            self.failures -= 1
            raise QueryLogError("no broker")
        super().send_many(topic, records)


def _records(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [(f"q{i}".encode(), json.dumps({"query_id": f"q{i}"}).encode()) for i in range(start, n)]


def test_records_kafka_refuses_are_spooled_and_replayed_in_order(tmp_path: Path) -> None:
    kafka, spool = FlakySink(), Spool(tmp_path / "spool", 1 << 20)
    sink = SpoolingSink(kafka, spool)
    sink.send_many("ubi.queries", _records(2))  # Kafka up: straight through
    kafka.down = True
    for record in _records(10, start=2):
        sink.send("ubi.queries", *record)  # the first fails over; the rest follow the spool
    assert kafka.tries == 2 and spool.topics() == ["ubi.queries"]
    replayer = SpoolReplayer(spool, kafka, interval_s=0.01, batch=3)
    assert not replayer.replay_once() and not spool.empty()  # still down: nothing lost
    kafka.down = False
    sink.send("ubi.queries", *_records(11, start=10)[0])  # behind the spooled ones, in order
    while not spool.empty():
        assert replayer.replay_once()
    assert [key for _, key, _ in kafka.records] == [f"q{i}".encode() for i in range(11)]
    sink.send("ubi.queries", *_records(12, start=11)[0])  # the spool is empty: direct again
    assert kafka.records[-1][1] == b"q11" and spool.size == 0
    assert spool.spooled == spool.replayed == {"ubi.queries": 9}  # q2..q10
    registry = CollectorRegistry()
    registry.register(spool_metrics(spool))
    assert (
        'clicktune_spool_replayed_total{topic="ubi.queries"} 9.0'
        in generate_latest(registry).decode()
    )


def test_a_replay_cut_short_keeps_the_rest_and_the_order(tmp_path: Path) -> None:
    kafka, spool = FlakySink(failures=1), Spool(tmp_path, 1 << 20)
    SpoolingSink(kafka, spool).send_many("ubi.events", _records(5))
    replayer = SpoolReplayer(spool, kafka, interval_s=0.01, batch=2)
    assert replayer.replay_once()  # q0, q1 sent and cut
    kafka.failures = 1
    assert not replayer.replay_once()  # refused: q2.. stay
    restarted = Spool(tmp_path, 1 << 20)  # a replica restarted here finds the rest
    while not restarted.empty():
        SpoolReplayer(restarted, kafka, interval_s=0.01, batch=2).replay_once()
    assert [key for _, key, _ in kafka.records] == [f"q{i}".encode() for i in range(5)]


def test_bytes_that_are_not_utf8_survive_the_spool(tmp_path: Path) -> None:
    kafka, spool = FlakySink(failures=1), Spool(tmp_path, 1 << 20)
    SpoolingSink(kafka, spool).send("t", b"k\xff", b'{"q":"\xe2\x82\xac"}\x00\xfe')
    SpoolReplayer(spool, kafka, interval_s=0.01).replay_once()
    assert kafka.records == [("t", b"k\xff", b'{"q":"\xe2\x82\xac"}\x00\xfe')]


def test_a_full_spool_drops_with_a_counter_and_a_log_line(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    kafka, spool = FlakySink(), Spool(tmp_path, 1024)
    kafka.down = True
    sink = SpoolingSink(kafka, spool)
    caplog.set_level("ERROR")
    with pytest.raises(SpoolFullError):  # the collector answers 503 for it
        sink.send_many("ubi.events", _records(100))
    log = SpooledQueryLog(sink, "ubi.queries")
    for i in range(100):
        log.publish({"query_id": f"q{i}"})  # a search never fails for the spool
    kept = len(Spool(tmp_path, 1024).read("ubi.queries", 1000)[0])
    assert 0 < kept < 100 and spool.dropped == {"ubi.events": 100, "ubi.queries": 100 - kept}
    assert "spool full" in caplog.text
    registry = CollectorRegistry()
    registry.register(spool_metrics(spool))
    text = generate_latest(registry).decode()
    assert 'clicktune_spool_dropped_total{topic="ubi.events"} 100.0' in text


def test_searches_answer_while_kafka_is_down_and_their_records_are_replayed(
    tmp_path: Path,
) -> None:
    encoder = HashingEncoder(dimension=32, version="v7")
    kafka, spool = FlakySink(), Spool(tmp_path, 1 << 20)
    kafka.down = True
    query_log = SpooledQueryLog(SpoolingSink(kafka, spool), "ubi.queries")
    app = create_app(ModelSlot(encoder), MemoryIndex(encoder), query_log, ServingSettings())
    client = TestClient(app)
    ids = []
    for query in ("heat", "shock", "wing"):
        answer = client.post("/v1/search", json={"query": query})
        assert answer.status_code == 200
        ids.append(answer.json()["query_id"])
    kafka.down = False
    SpoolReplayer(spool, kafka, interval_s=0.01).replay_once()
    assert [json.loads(value)["query_id"] for _, _, value in kafka.records] == ids


class _Pending:
    """A delivery the producer still holds until the test settles it."""

    def __init__(self) -> None:
        self.done, self.error = False, False

    def wait(self) -> None:
        if not self.done or self.error:
            raise QueryLogError("not acknowledged within 0.01 s")

    def settled(self) -> bool:
        return self.done

    def failed(self) -> bool:
        return self.error


class SlowKafka:
    """A producer whose acks come late: each `submit` returns a fresh pending delivery."""

    def __init__(self) -> None:
        self.submitted: list[list[bytes]] = []
        self.deliveries: list[_Pending] = []

    def submit(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> _Pending:
        self.submitted.append([key for key, _ in records])
        self.deliveries.append(_Pending())
        return self.deliveries[-1]


def test_a_batch_the_producer_still_holds_is_not_sent_again(tmp_path: Path) -> None:
    kafka, spool = SlowKafka(), Spool(tmp_path, 1 << 20)
    spool.append("ubi.events", _records(4))
    replayer = SpoolReplayer(spool, kafka, interval_s=0.01, batch=3)
    for _ in range(5):  # broker down: the producer keeps the first batch and retries it
        assert not replayer.replay_once()
    assert kafka.submitted == [[b"q0", b"q1", b"q2"]]
    kafka.deliveries[0].done = True  # the broker is back and acknowledged it late
    kafka.deliveries.clear()
    assert not replayer.replay_once()  # cut without a resend; q3 is submitted next
    assert kafka.submitted[1:] == [[b"q3"]] and spool.replayed == {"ubi.events": 3}
    kafka.deliveries[0].done = kafka.deliveries[0].error = True  # given up: not delivered
    assert not replayer.replay_once()  # so q3 is sent again
    assert kafka.submitted[1:] == [[b"q3"], [b"q3"]] and not spool.empty()
