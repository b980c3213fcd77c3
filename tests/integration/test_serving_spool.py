"""`clicktune serve` with Kafka down at start: it starts, searches answer 200, their query records
wait in the local spool and reach the topic, in order and none lost, once Kafka is reachable.

Kafka is "down" behind a loopback proxy that refuses connections (the shared broker is never
stopped); restoring the proxy lets the replica bootstrap through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("onnx")

from clicktune.local_http import free_port  # noqa: E402
from serving.config import IndexSettings  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.registry import LocalRegistry  # noqa: E402
from tests.integration.ingest_support import TcpProxy  # noqa: E402
from tests.integration.serve_ready import wait_healthy  # noqa: E402
from tests.unit.serving.tiny_model import build_tiny_model  # noqa: E402

SEARCHES = 12


def _topic_records(settings, topic: str, expected: int) -> list[dict]:  # type: ignore[no-untyped-def]
    from kafka import KafkaConsumer

    from clicktune.clients import kafka_options

    consumer = KafkaConsumer(
        topic,
        **kafka_options(settings.kafka),
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
    )
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def test_serve_starts_without_kafka_and_replays_the_spooled_queries(  # type: ignore[no-untyped-def]
    services, opensearch, settings, tmp_path: Path
) -> None:
    name = f"t-spool-{os.getpid()}-{int(time.time())}"
    registry = LocalRegistry(tmp_path / "models")
    build_tiny_model(tmp_path / "src")
    registry.add(tmp_path / "src", "v1")
    registry.set_alias("production", "v1")
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    docs.swap_alias(docs.create_version("v1", 8))
    host, port = services.kafka.bootstrap_servers.split(",")[0].rsplit(":", 1)
    kafka = TcpProxy(host, int(port))
    kafka.cut()  # Kafka is down when the replica starts
    http_port = free_port()
    env = {
        **os.environ,
        "CLICKTUNE_HOME": str(tmp_path),
        "CLICKTUNE_OPENSEARCH__URL": services.opensearch.url,
        "CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka.port}",
        "CLICKTUNE_KAFKA__CONTROL_TOPIC": f"{name}-control",
        "CLICKTUNE_INGEST__QUERIES_TOPIC": f"{name}-queries",
        "CLICKTUNE_INGEST__EVENTS_TOPIC": f"{name}-events",
        "CLICKTUNE_SERVING__INDEX__ALIAS": name,
        "CLICKTUNE_SERVING__INDEX__PREFIX": name,
        "CLICKTUNE_SERVING__SPOOL__REPLAY_S": "1",
        "CLICKTUNE_SERVING__HOT_SWAP__LISTEN_CONTROL": "false",
    }
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "clicktune", "serve", "--port", str(http_port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(url, process, tmp_path / "serve.log")
        ids = []
        for i in range(SEARCHES):
            answer = httpx.post(f"{url}/v1/search", json={"query": f"wing {i}"}, timeout=30)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["query_id"])
        spooled = (tmp_path / "spool" / f"{name}-queries.jsonl").read_text().splitlines()
        assert len(spooled) == SEARCHES
        assert "clicktune_spool_bytes" in httpx.get(f"{url}/metrics").text

        kafka.restore()  # Kafka is back: the replayer connects and sends the spool
        deadline = time.monotonic() + 120
        while (tmp_path / "spool" / f"{name}-queries.jsonl").stat().st_size > 0:
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        records = _topic_records(settings, f"{name}-queries", SEARCHES)
        assert [r["query_id"] for r in records] == ids  # none lost, none doubled, in order
        answer = httpx.post(f"{url}/v1/search", json={"query": "after"}, timeout=30)
        assert answer.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        kafka.close()
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})
