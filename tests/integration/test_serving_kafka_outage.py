"""`clicktune serve` with Kafka dying in the middle of a stream of searches and collector events:
every search still answers 200, the records wait in the local spool, and once the broker is back
the spool replays them: every query id and event id a client got is in Kafka (none lost).

The broker is the test's own (tests/integration/private_kafka.py), so it can really die: first
SIGKILL (connections reset, the port refuses), then SIGSTOP (connections stay open and hang,
the harder case for a client). Each outage outlasts the serve's ack timeouts
(`query_log_timeout_s`, `collector.send_timeout_s`), so records do go to the spool.

The spool promises at least once: a record whose ack did not come in time is spooled, yet the
producer may still deliver its own copy, so a few records (those in flight when the broker died)
reach the topic twice; the ingest worker writes by id (`_id` = query_id / event_id), so a copy
overwrites instead of doubling. A replayed batch is not sent again while the producer still holds
it, so an outage does not multiply the spool: copies stay under MAX_COPIES per topic and fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.private_kafka import PrivateKafka, private_kafka  # noqa: F401 (fixture)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("onnx")

from clicktune.local_http import free_port  # noqa: E402
from serving.config import IndexSettings  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.registry import LocalRegistry  # noqa: E402
from tests.integration.serve_ready import wait_healthy  # noqa: E402
from tests.unit.serving.tiny_model import build_tiny_model  # noqa: E402

KILL_S = 10.0  # longer than the ack timeouts below, so records go to the spool
FREEZE_S = 35.0  # also longer than the producer's request_timeout_ms (30 s): requests time out
QUERY_LOG_TIMEOUT_S = 3.0
SEND_TIMEOUT_S = 2.0
REPLAY_DEADLINE_S = 15.0  # from the broker answering again (kafka-python's own backoff: 30 s)
MAX_COPIES = 5  # per topic and fault: the records in flight when the broker went down
BASE_MS = 1_748_779_200_000


@dataclass
class Traffic:
    """A client that searches, then posts a click for the answer, one request after the other."""

    url: str
    name: str
    phase: str = "up"
    answers: list[tuple[str, int, float, str | None]] = field(default_factory=list)
    events: list[tuple[str, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                self._search(client, i)
                i += 1
                time.sleep(0.05)

    def _search(self, client: httpx.Client, i: int) -> None:
        phase, t0 = self.phase, time.monotonic()
        try:
            answer = client.post("/v1/search", json={"query": f"wing {i}", "k": 3})
            status = answer.status_code
        except httpx.HTTPError:
            status = -1  # no answer at all
        query_id = answer.json()["query_id"] if status == 200 else None
        self.answers.append((phase, status, time.monotonic() - t0, query_id))
        if query_id is None:
            return
        event_id = f"{self.name}-e{i}"
        click = {
            "action_name": "click",
            "query_id": query_id,
            "timestamp": BASE_MS + i,
            "event_attributes": {"object": {"object_id": f"d{i % 8}"}, "event_id": event_id},
        }
        try:
            status = client.post("/v1/events", json=click).status_code
        except httpx.HTTPError:
            status = -1
        self.events.append((phase, status, event_id))

    def stop(self) -> None:
        self._stop.set()


def _metric(url: str, name: str) -> float:
    """`name` summed over its labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith((f"{name} ", f"{name}{{"))
    )


def _wait(condition: Callable[[], bool], timeout_s: float, what: str, log: Path) -> float:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout_s, f"{what}; serve log:\n{log.read_text()[-3000:]}"
        time.sleep(0.25)
    return time.monotonic() - t0


def _topic_ids(address: str, topic: str, id_of: Callable[[dict[str, Any]], str]) -> Counter[str]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=[address], auto_offset_reset="earliest", consumer_timeout_ms=5_000
    )
    try:
        return Counter(id_of(json.loads(m.value)) for m in consumer)
    finally:
        consumer.close()


def _serve(tmp_path: Path, name: str, kafka: str, opensearch_url: str) -> tuple[Any, str, Path]:
    http_port = free_port()
    env = {
        **os.environ,
        "CLICKTUNE_HOME": str(tmp_path),
        "CLICKTUNE_OPENSEARCH__URL": opensearch_url,
        "CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS": kafka,
        "CLICKTUNE_KAFKA__CONTROL_TOPIC": f"{name}-control",
        "CLICKTUNE_INGEST__QUERIES_TOPIC": f"{name}-queries",
        "CLICKTUNE_INGEST__EVENTS_TOPIC": f"{name}-events",
        "CLICKTUNE_SERVING__INDEX__ALIAS": name,
        "CLICKTUNE_SERVING__INDEX__PREFIX": name,
        "CLICKTUNE_SERVING__SPOOL__REPLAY_S": "1",
        "CLICKTUNE_SERVING__QUERY_LOG_TIMEOUT_S": str(QUERY_LOG_TIMEOUT_S),
        "CLICKTUNE_SERVING__COLLECTOR__SEND_TIMEOUT_S": str(SEND_TIMEOUT_S),
        "CLICKTUNE_SERVING__COLLECTOR__RATE_PER_S": "0",
        "CLICKTUNE_SERVING__HOT_SWAP__LISTEN_CONTROL": "false",
    }
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "clicktune", "serve", "--port", str(http_port)],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    return process, f"http://127.0.0.1:{http_port}", log


def _outage(
    traffic: Traffic,
    url: str,
    log: Path,
    fault: str,
    seconds: float,
    down: Callable[[], None],
    up: Callable[[], None],
) -> dict[str, float]:
    """Take the broker down for `seconds` under traffic, bring it back, wait for the replay."""
    spooled_before = _metric(url, "clicktune_spool_spooled_total")
    traffic.phase = f"{fault}: broker down"
    down()
    peak = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, _metric(url, "clicktune_spool_bytes"))
        time.sleep(0.5)
    traffic.phase = f"{fault}: restart and replay"
    up()
    replay_s = _wait(
        lambda: _metric(url, "clicktune_spool_bytes") == 0,
        REPLAY_DEADLINE_S,
        "the spool did not empty after the broker came back",
        log,
    )
    traffic.phase = "up"
    return {
        "spooled": _metric(url, "clicktune_spool_spooled_total") - spooled_before,
        "spool_peak_bytes": peak,
        "replay_s": round(replay_s, 1),
    }


def test_kafka_dying_mid_stream_loses_no_search_and_no_event(  # type: ignore[no-untyped-def]
    private_kafka: PrivateKafka,  # noqa: F811
    services,
    opensearch,
    tmp_path: Path,
) -> None:
    name = f"t-outage-{os.getpid()}-{int(time.time())}"
    registry = LocalRegistry(tmp_path / "models")
    build_tiny_model(tmp_path / "src")
    registry.add(tmp_path / "src", "v1")
    registry.set_alias("production", "v1")
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    docs.swap_alias(docs.create_version("v1", 8))
    process, url, log = _serve(tmp_path, name, private_kafka.address, services.opensearch.url)
    traffic = Traffic(url, name)
    client = threading.Thread(target=traffic.run, daemon=True)
    faults: dict[str, dict[str, float]] = {}
    try:
        wait_healthy(url, process, log)
        client.start()
        time.sleep(3)  # steady state: records go straight to Kafka
        broker = private_kafka
        faults["SIGKILL"] = _outage(traffic, url, log, "SIGKILL", KILL_S, broker.kill, broker.start)
        time.sleep(3)
        faults["SIGSTOP"] = _outage(
            traffic, url, log, "SIGSTOP", FREEZE_S, broker.freeze, broker.thaw
        )
        time.sleep(3)  # searches after the second recovery go to Kafka again
        traffic.stop()
        client.join(timeout=60)
        spooled = _metric(url, "clicktune_spool_spooled_total")
        replayed = _metric(url, "clicktune_spool_replayed_total")
        serve_log = log.read_text()
    finally:
        traffic.stop()
        process.terminate()
        process.wait(timeout=30)
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})

    queries = _topic_ids(private_kafka.address, f"{name}-queries", lambda r: r["query_id"])
    events = _topic_ids(
        private_kafka.address, f"{name}-events", lambda r: r["event_attributes"]["event_id"]
    )
    asked = traffic.answers
    failed = [a for a in asked if a[1] != 200]
    ids = [a[3] for a in asked if a[3] is not None]
    event_ids = [e[2] for e in traffic.events if e[1] == 202]
    lost_queries = [q for q in ids if queries[q] == 0]
    lost_events = [e for e in event_ids if events[e] == 0]
    copies = {
        "queries": sum(n - 1 for n in queries.values()),
        "events": sum(n - 1 for n in events.values()),
    }
    report: dict[str, Any] = {
        "searches": len(asked),
        "per_phase": dict(Counter(a[0] for a in asked)),
        "answered_per_phase": dict(Counter(a[0] for a in asked if a[1] == 200)),
        "failed": len(failed),
        "spooled": spooled,
        "replayed": replayed,
        "slowest_s": round(max(a[2] for a in asked), 2),
        "events_sent": len(traffic.events),
        "events_accepted": len(event_ids),
        "queries_in_kafka": sum(queries.values()),
        "events_in_kafka": sum(events.values()),
        "copies": copies,
        "lost_queries": len(lost_queries),
        "lost_events": len(lost_events),
        "faults": faults,
    }
    print(json.dumps(report, indent=1))
    assert not failed, f"searches without a 200: {failed[:5]}; {report}"
    assert len(event_ids) == len(traffic.events), f"events refused: {report}"
    assert all(f["spooled"] > 0 for f in faults.values()), f"nothing spooled: {report}"
    assert replayed == spooled, f"spooled records not replayed: {report}"
    assert not lost_queries and not lost_events, f"lost: {report}\n{serve_log[-3000:]}"
    assert set(queries) == set(ids), "the topic holds query ids no search answered with"
    assert max(copies.values()) <= MAX_COPIES * len(faults), f"copies multiplied: {report}"
