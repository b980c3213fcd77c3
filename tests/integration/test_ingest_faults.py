"""The ingest worker as a real process against the real servers, under the faults it must survive:
kill -9 mid-stream, OpenSearch cut off, a second worker dying, SIGTERM. Each test counts what
reached OpenSearch."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from opensearchpy import helpers

from clicktune.cli.ingest import build_worker, read_status
from clicktune.config import Settings
from tests.integration import ingest_support
from tests.integration.ingest_support import (
    TcpProxy,
    assert_sample_stored,
    event_bytes,
    fast_producer,
    kill,
    produce,
    start_worker,
    stored_count,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.integration
ingest_settings = ingest_support.ingest_settings  # the fixture


def _produce_in_background(
    settings: Settings, values: list[bytes], chunks: int, pause_s: float
) -> threading.Thread:
    """Send `values` in `chunks` parts `pause_s` apart, so workers meet a stream, not a backlog."""

    def send() -> None:
        producer = fast_producer(settings)
        size = -(-len(values) // chunks)
        for start in range(0, len(values), size):
            for value in values[start : start + size]:
                producer.send(settings.ingest.events_topic, value=value)
            producer.flush()
            time.sleep(pause_s)
        producer.close()

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _setup_topics(settings: Settings) -> None:
    """Create the topics (two partitions each) and templates before anything is produced."""
    with build_worker(settings) as worker:
        worker.setup()


@pytest.mark.slow
def test_kill_9_at_random_points_of_100k_records_loses_and_doubles_nothing(
    ingest_settings: Settings, opensearch: Any, tmp_path: Path
) -> None:
    n, duplicates = 100_000, 2_000
    rng = random.Random(4)
    values = [event_bytes(i) for i in range(n)]
    values += [values[rng.randrange(n)] for _ in range(duplicates)]  # redeliveries
    index = ingest_settings.ingest.events_index
    env, log = worker_env(ingest_settings), tmp_path / "worker.log"
    _setup_topics(ingest_settings)
    producer = _produce_in_background(ingest_settings, values, chunks=10, pause_s=0.5)

    kills = 0
    for target in sorted(rng.sample(range(5_000, 80_000), 3)):
        worker = start_worker(env, log)
        wait_until(lambda: stored_count(opensearch, index) >= target, 120, f"{target} stored")  # noqa: B023
        time.sleep(rng.uniform(0, 0.5))  # land anywhere in a batch
        assert kill(worker) == -signal.SIGKILL
        kills += 1
    producer.join(timeout=120)
    last = start_worker(env, log, "--idle-exit", "10")
    assert last.wait(timeout=170) == 0, log.read_text()[-3000:]

    assert kills == 3
    assert stored_count(opensearch, index) == n  # each once: redeliveries overwrote
    assert_sample_stored(opensearch, index, [f"e{i}" for i in rng.sample(range(n), 500)])
    assert read_status(ingest_settings).total_lag == 0


@pytest.mark.slow
def test_opensearch_cut_off_mid_stream_loses_nothing(
    ingest_settings: Settings, opensearch: Any, tmp_path: Path
) -> None:
    n = 20_000
    target = urlparse(ingest_settings.opensearch.url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 9200)
    index = ingest_settings.ingest.events_index
    env, log = worker_env(ingest_settings, opensearch_url=proxy.url), tmp_path / "worker.log"
    _setup_topics(ingest_settings)
    producer = _produce_in_background(ingest_settings, [event_bytes(i) for i in range(n)], 4, 2)
    try:
        worker = start_worker(env, log, "--idle-exit", "8")
        wait_until(lambda: stored_count(opensearch, index) >= 2_000, 90, "2000 stored")
        proxy.cut()
        time.sleep(1.5)  # a bulk in flight may still land; after that nothing gets through
        during = stored_count(opensearch, index)
        time.sleep(8)
        assert worker.poll() is None, "the worker died during the outage"
        assert stored_count(opensearch, index) == during < n
        proxy.restore()
        producer.join(timeout=60)
        assert worker.wait(timeout=150) == 0, log.read_text()[-3000:]
    finally:
        proxy.close()
    assert stored_count(opensearch, index) == n
    assert "retry" in log.read_text()  # it backed off and tried again
    assert read_status(ingest_settings).total_lag == 0


@pytest.mark.slow
def test_two_workers_share_two_partitions_and_the_survivor_takes_over(
    ingest_settings: Settings, opensearch: Any, tmp_path: Path
) -> None:
    import httpx

    from ingest.metrics import parse_metrics

    n = 30_000
    index = ingest_settings.ingest.events_index
    env = worker_env(ingest_settings)
    _setup_topics(ingest_settings)
    doomed = start_worker(env, tmp_path / "a.log", "--metrics-port", "19871")
    # Idle long enough to outlast A's session timeout (10 s) and the rebalance on a loaded
    # machine: with 12 s, B sometimes left before A's partition reached it.
    survivor = start_worker(env, tmp_path / "b.log", "--idle-exit", "45")
    producer = _produce_in_background(ingest_settings, [event_bytes(i) for i in range(n)], 6, 1)

    def doomed_has_read() -> bool:
        try:
            metrics = parse_metrics(httpx.get("http://127.0.0.1:19871/metrics").text)
        except httpx.HTTPError:
            return False
        return sum(metrics.read.values()) > 0

    wait_until(doomed_has_read, 90, "worker A to read records of its partition")
    assert kill(doomed) == -signal.SIGKILL
    producer.join(timeout=60)
    assert survivor.wait(timeout=150) == 0, (tmp_path / "b.log").read_text()[-3000:]

    assert stored_count(opensearch, index) == n
    status = read_status(ingest_settings)
    events = [p for p in status.partitions if p.topic == ingest_settings.ingest.events_topic]
    assert len(events) == 2 and all(p.lag == 0 for p in events)


def test_sigterm_finishes_the_batch_commits_it_and_exits_0(
    ingest_settings: Settings, opensearch: Any, tmp_path: Path
) -> None:
    s = ingest_settings.ingest
    env, log = worker_env(ingest_settings), tmp_path / "worker.log"
    _setup_topics(ingest_settings)
    metadata = produce(ingest_settings, s.events_topic, [event_bytes(i) for i in range(20_000)])
    where = {f"e{i}": (m.partition, m.offset) for i, m in enumerate(metadata)}
    worker = start_worker(env, log, "--metrics-port", "19872")
    wait_until(lambda: stored_count(opensearch, s.events_index) > 0, 90, "first records stored")
    running = read_status(ingest_settings, metrics_url="http://127.0.0.1:19872/metrics", sample_s=1)
    assert running.rate_source == "metrics"

    assert kill(worker, signal.SIGTERM) == 0, log.read_text()[-3000:]

    status = read_status(ingest_settings)
    committed = {
        p.partition: p.committed or 0 for p in status.partitions if p.topic == s.events_topic
    }
    opensearch.indices.refresh(index=s.events_index)
    stored = [h["_id"] for h in helpers.scan(opensearch, index=s.events_index, _source=False)]
    assert stored, "nothing was written before SIGTERM"
    uncommitted = [i for i in stored if where[i][1] >= committed[where[i][0]]]
    assert uncommitted == []  # lag 0 for everything it wrote
    assert sum(committed.values()) == len(stored)  # and nothing committed that is not stored
