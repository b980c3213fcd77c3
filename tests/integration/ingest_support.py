"""Helpers of the ingest integration tests: isolated topics and indexes, worker subprocesses,
a fast producer, a TCP proxy that can cut OpenSearch off, and OpenSearch counts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from clicktune.clients import kafka_options
from clicktune.config import Settings
from ingest.dlq import dlq_topic
from ingest.templates import template_name

BASE_MS = 1_748_779_200_000


@pytest.fixture()
def ingest_settings(services: Settings, unique: str, opensearch: Any) -> Iterator[Settings]:
    """Settings with topics, indexes and a group of the test's own; all deleted afterwards."""
    ingest = services.ingest.model_copy(
        update={
            "queries_topic": f"test.{unique}.queries",
            "events_topic": f"test.{unique}.events",
            "queries_index": f"test_{unique}_queries",
            "events_index": f"test_{unique}_events",
            "group_id": f"test-{unique}",
            "topic_partitions": 2,
            "initial_backoff_s": 0.2,
            "max_backoff_s": 2.0,
            "progress_interval_s": 1.0,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        }
    )
    settings = services.model_copy(update={"ingest": ingest})
    yield settings
    drop_ingest_state(opensearch, settings, f"test_{unique}_*")


def drop_ingest_state(opensearch: Any, settings: Settings, indexes: str) -> None:
    """Delete a test's UBI indexes, templates, topics (with dead letters) and consumer group."""
    ingest = settings.ingest
    opensearch.indices.delete(index=indexes, ignore=[404])
    for index in (ingest.queries_index, ingest.events_index):
        opensearch.indices.delete_index_template(name=template_name(index), ignore=[404])
    admin = KafkaAdminClient(**kafka_options(settings.kafka))
    topics = [ingest.queries_topic, ingest.events_topic]
    admin.delete_topics([*topics, *(dlq_topic(t) for t in topics)], raise_errors=False)
    with contextlib.suppress(Exception):  # a group that never committed does not exist
        admin.delete_groups([ingest.group_id])
    admin.close()


def worker_env(settings: Settings, opensearch_url: str | None = None) -> dict[str, str]:
    """The environment that makes `python -m clicktune ingest run` use these settings."""
    env = dict(os.environ)
    env["CLICKTUNE_OPENSEARCH__URL"] = opensearch_url or settings.opensearch.url
    env["CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS"] = settings.kafka.bootstrap_servers
    for key, value in settings.ingest.model_dump(mode="json").items():
        # nested settings (ingest.index) travel as JSON, which pydantic-settings parses
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        env[f"CLICKTUNE_INGEST__{key.upper()}"] = text
    return env


def start_worker(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A real worker process; its output goes to `log` (appended)."""
    command = [sys.executable, "-m", "clicktune", "ingest", "run", *args]
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def kill(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> int:
    process.send_signal(sig)
    return process.wait(timeout=60)


def event(i: int) -> dict[str, Any]:
    """A small valid UBI event whose id is `e<i>`."""
    return {
        "action_name": "click",
        "query_id": f"q{i // 10}",
        "timestamp": BASE_MS + i,
        "event_attributes": {"object": {"object_id": f"d{i % 997}"}, "event_id": f"e{i}"},
    }


def event_bytes(i: int) -> bytes:
    return json.dumps(event(i), separators=(",", ":")).encode()


def fast_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(
        **kafka_options(settings.kafka), acks="all", linger_ms=20, batch_size=256 * 1024
    )


def produce(settings: Settings, topic: str, values: list[bytes]) -> list[Any]:
    """Send `values` and wait for every ack; return their RecordMetadata (partition, offset)."""
    producer = fast_producer(settings)
    futures = [producer.send(topic, value=value) for value in values]
    producer.flush()
    metadata = [future.get(timeout=30) for future in futures]
    producer.close()
    return metadata


def dead_letters(settings: Settings) -> list[Any]:
    """Every record on the test's two dead-letter topics so far."""
    s = settings.ingest
    consumer = KafkaConsumer(
        dlq_topic(s.queries_topic),
        dlq_topic(s.events_topic),
        **kafka_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    letters = list(consumer)
    consumer.close()
    return letters


def stored_count(opensearch: Any, index: str) -> int:
    if not opensearch.indices.exists(index=index):
        return 0
    opensearch.indices.refresh(index=index)
    return int(opensearch.count(index=index)["count"])


def assert_sample_stored(opensearch: Any, index: str, ids: list[str]) -> None:
    found = opensearch.mget(index=index, body={"ids": ids}, _source=False)["docs"]
    missing = [doc["_id"] for doc in found if not doc.get("found")]
    assert missing == [], f"{len(missing)} of {len(ids)} sampled ids missing: {missing[:5]}"


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.25)


class TcpProxy:
    """A loopback TCP proxy in front of `target`; `cut()` drops every connection and refuses
    new ones until `restore()`: an outage as the client sees it, the server untouched."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                _close(sock)
                with self._lock:
                    self._open.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
