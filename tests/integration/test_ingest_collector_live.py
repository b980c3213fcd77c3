"""The HTTP collector in a real serving app (uvicorn, real Kafka producer) feeding the real worker:
plain httpx posts reach OpenSearch; bad bodies get 422/413; Kafka unreachable gets 503."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from kafka import KafkaProducer

from clicktune.cli.ingest import build_worker
from clicktune.clients import kafka_options
from clicktune.config import Settings
from clicktune.local_http import free_port
from serving.api.app import create_app
from serving.api.collector import KafkaRecordSink, collector_router
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.state.query_log import InMemoryQueryLog
from tests.integration import ingest_support
from tests.integration.ingest_support import event, stored_count

pytestmark = pytest.mark.integration
ingest_settings = ingest_support.ingest_settings  # the fixture


class NoIndex:
    def live_index(self) -> str | None:
        return None

    def search_knn(self, vector: Any, k: int, index: str | None = None) -> list:
        return []


@contextmanager
def serving_app(settings: Settings, producer: KafkaProducer) -> Iterator[str]:
    """A real app with the collector on a real port; yields its base URL."""
    serving = settings.serving.model_copy(update={"cors_origins": ["https://shop.example"]})
    collector_settings = serving.collector.model_copy(
        update={"max_body_bytes": 64 * 1024, "send_timeout_s": 2.0}
    )
    router = collector_router(
        KafkaRecordSink(producer, collector_settings.send_timeout_s),
        collector_settings,
        queries_topic=settings.ingest.queries_topic,
        events_topic=settings.ingest.events_topic,
        max_record_bytes=settings.ingest.max_record_bytes,
    )
    app = create_app(ModelSlot(HashingEncoder()), NoIndex(), InMemoryQueryLog(), serving, router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_posted_events_and_queries_reach_opensearch_through_kafka_and_the_worker(
    ingest_settings: Settings, opensearch: Any
) -> None:
    s = ingest_settings.ingest
    with build_worker(ingest_settings) as worker:
        worker.setup()
        producer = KafkaProducer(**kafka_options(ingest_settings.kafka), acks="all", linger_ms=5)
        with serving_app(ingest_settings, producer) as url:
            one = httpx.post(f"{url}/v1/events", json=event(0))
            many = httpx.post(f"{url}/v1/events", json=[event(i) for i in range(1, 201)])
            beacon = httpx.post(
                f"{url}/v1/events",
                content=json.dumps(event(201)),
                headers={
                    "Content-Type": "text/plain;charset=UTF-8",
                    "Origin": "https://shop.example",
                },
            )
            query = {"query_id": "q0", "timestamp": "2025-06-01T12:00:00Z", "user_query": "drill"}
            queries = httpx.post(f"{url}/v1/queries", json=query)

            bad = event(202) | {"timestamp": "last tuesday"}
            invalid = httpx.post(f"{url}/v1/events", json=[event(203), bad])
            huge = httpx.post(f"{url}/v1/events", json=[event(i) for i in range(1000)])
        producer.close(timeout=5)
        worker.run(max_idle_s=4)

    assert [one.status_code, many.status_code, beacon.status_code, queries.status_code] == [202] * 4
    assert many.json()["accepted"] == 200 and beacon.headers["access-control-allow-origin"]
    assert invalid.status_code == 422
    assert invalid.json()["error"]["records"][0]["index"] == 1
    assert "timestamp" in invalid.json()["error"]["records"][0]["reason"]
    assert huge.status_code == 413
    assert stored_count(opensearch, s.events_index) == 202  # 1 + 200 + 1; none of the refused
    assert stored_count(opensearch, s.queries_index) == 1


def test_kafka_unreachable_answers_503_with_retry_after(ingest_settings: Settings) -> None:
    dead = KafkaProducer(
        bootstrap_servers=[f"127.0.0.1:{free_port()}"],
        acks="all",
        max_block_ms=1000,
        api_version=(3, 0),  # no version probe: the producer builds, sends time out
    )
    with serving_app(ingest_settings, dead) as url:
        started = time.monotonic()
        answer = httpx.post(f"{url}/v1/events", json=event(1), timeout=30)
        waited = time.monotonic() - started
    dead.close(timeout=1)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert "not acknowledged" in answer.json()["error"]["message"]
    assert waited < 10
