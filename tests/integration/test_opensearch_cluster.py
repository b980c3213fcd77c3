"""A 2-node OpenSearch cluster on loopback (`services.opensearch_nodes` 2, the code of
`clicktune services up --nodes 2`) keeps every UBI record and answers every search while its
data node is killed and restarted.

The cluster gets its own home (`$CLICKTUNE_CLUSTER_TEST_HOME`, default under /tmp: the installed
distribution is kept there between runs, the nodes' data is not) and its own ports (9210-9211,
9310-9311), so an OpenSearch already serving on 9200 is never touched. Records go through the
ingest worker's path: validated, then written by `BulkWriter`, a batch refused as a whole kept
and written again (as the worker keeps an unacknowledged batch).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from opensearchpy import OpenSearch

from clicktune.config import LocalServicesSettings, Settings
from clicktune.services import manager, preflight
from clicktune.services.opensearch import OpenSearchService
from clicktune.services.process import wait_until
from ingest.errors import StoreUnavailable
from ingest.index_layout import UbiIndexSettings
from ingest.templates import install_templates
from ingest.validate import RecordKind, ValidRecord, validate_record
from ingest.writer import BulkWriter, Document
from serving.state.tasks import OpenSearchTaskStore

pytestmark = pytest.mark.integration

HOME = Path(os.environ.get("CLICKTUNE_CLUSTER_TEST_HOME", "/tmp/clicktune-cluster-test"))
HTTP_PORT, TRANSPORT_PORT = 9210, 9310
BASE_MS = 1_748_779_200_000
BATCH = 100  # records per bulk batch, queries and events alternating
BATCHES_PER_PHASE = 8
OUTAGE_S = 15.0  # node 2 stays down at least this long, records flowing all along
SEARCH_RETRY_S = 5.0  # a search not answered within this (retries included) is a failed search


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[OpenSearchService]]:
    """Two fresh nodes (node 1 cluster manager + data, node 2 data), stopped at the end."""
    services = LocalServicesSettings(
        opensearch_http_port=HTTP_PORT,
        opensearch_transport_port=TRANSPORT_PORT,
        opensearch_nodes=2,
        opensearch_heap="512m",
        opensearch_extra_heap="512m",
        start_timeout_s=300,
    )
    settings = Settings(home=HOME, services=services)
    nodes = [s for s in manager.local_services(settings) if isinstance(s, OpenSearchService)]
    for node in nodes:
        shutil.rmtree(node.data, ignore_errors=True)
    try:
        manager.up(nodes, print, services.start_timeout_s)
        yield nodes
    finally:
        manager.down(nodes, print)
        for node in nodes:
            shutil.rmtree(node.data, ignore_errors=True)


@dataclass
class Searches:
    """Searches sent all along; a failure is one not answered in full within SEARCH_RETRY_S."""

    answered: int = 0
    retried: int = 0
    failed: list[str] = field(default_factory=list)
    slowest_s: float = 0.0


def _search_until(client: OpenSearch, index: str, stop: threading.Event, out: Searches) -> None:
    while not stop.is_set():
        started = time.monotonic()
        while True:
            try:
                answer = client.search(index=index, body={"size": 1, "track_total_hits": True})
                if answer["_shards"]["failed"] == 0 and not answer["timed_out"]:
                    out.answered += 1
                    break
                problem = f"{answer['_shards']['failed']} shards failed"
            except Exception as exc:  # noqa: BLE001 - any error counts as a failed try
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() - started > SEARCH_RETRY_S:
                out.failed.append(problem)
                break
            out.retried += 1
            time.sleep(0.2)
        out.slowest_s = max(out.slowest_s, time.monotonic() - started)
        time.sleep(0.05)


def _records(start: int, count: int, queries: str, events: str) -> list[Document]:
    """Records `start`..`start + count` validated as the worker validates them."""
    documents = []
    for i in range(start, start + count):
        if i % 2:
            raw = {"query_id": f"q{i}", "user_query": f"red shoes {i}", "timestamp": BASE_MS + i}
            kind, index = RecordKind.QUERY, queries
        else:
            raw = {
                "action_name": "click",
                "query_id": f"q{i - 1}",
                "timestamp": BASE_MS + i,
                "event_attributes": {"object": {"object_id": f"d{i}"}, "event_id": f"e{i}"},
            }
            kind, index = RecordKind.EVENT, events
        record = validate_record(json.dumps(raw).encode(), kind, 64 * 1024)
        assert isinstance(record, ValidRecord), record
        documents.append(Document(index, record.record_id, record.source))
    return documents


def _health(client: OpenSearch, timeout_s: int = 120, **wait: str) -> dict:
    """`_cluster/health` once the cluster is as `wait` says, failing after `timeout_s`."""
    params = {**wait, "timeout": f"{timeout_s}s"}
    health = client.cluster.health(params=params, request_timeout=timeout_s + 10)
    assert not health["timed_out"], health
    return health


class Ingest:
    """Writes batches through the worker's BulkWriter, keeping a refused batch until stored."""

    def __init__(self, client: OpenSearch, queries: str, events: str) -> None:
        self.writer = BulkWriter(client, max_attempts=5, initial_backoff_s=0.5, max_backoff_s=4)
        self.queries, self.events = queries, events
        self.sent = 0
        self.batch_retries = 0

    def batches(self, count: int, deadline_s: float = 120.0, for_s: float = 0.0) -> None:
        """`count` batches, and more until `for_s` seconds have passed."""
        until = time.monotonic() + for_s
        written = 0
        while written < count or time.monotonic() < until:
            written += 1
            documents = _records(self.sent, BATCH, self.queries, self.events)
            started = time.monotonic()
            while True:
                try:
                    result = self.writer.write(documents)
                    break
                except StoreUnavailable:
                    assert time.monotonic() - started < deadline_s, "a batch was never stored"
                    self.batch_retries += 1
                    time.sleep(1.0)
            assert result.dead_letters == []
            self.sent += BATCH


def test_a_data_node_killed_and_restarted_loses_no_record_and_fails_no_search(
    cluster: list[OpenSearchService], unique: str
) -> None:
    first, second = cluster
    client = OpenSearch(first.address, timeout=60)
    health = _health(client, wait_for_nodes="2", wait_for_status="green")
    assert health["number_of_nodes"] == 2
    queries, events = f"ubi_queries_{unique}", f"ubi_events_{unique}"
    install_templates(client, queries, events, UbiIndexSettings(shards=2, replicas=1))
    tasks = OpenSearchTaskStore(client, f"clicktune-tasks-{unique}")  # replicas '0-1' by default
    tasks.ensure_index()
    ingest = Ingest(client, queries, events)
    ingest.batches(1)  # creates both indexes from the templates
    _health(client, wait_for_status="green")
    layout = client.indices.get_settings(index=queries)[queries]["settings"]["index"]
    assert (layout["number_of_shards"], layout["number_of_replicas"]) == ("2", "1")
    own = client.indices.get_settings(index=tasks.index)[tasks.index]["settings"]["index"]
    assert own["number_of_replicas"] == "1"  # auto-expanded to the second node
    primaries = client.cat.shards(index=f"{queries},{events}", format="json", h="node,prirep")
    on_2 = sum(1 for row in primaries if row["prirep"] == "p" and row["node"] == "clicktune-node-2")

    stop, searches = threading.Event(), Searches()
    searcher = threading.Thread(
        target=_search_until, args=(client, f"{queries},{events}", stop, searches), daemon=True
    )
    searcher.start()
    try:
        ingest.batches(BATCHES_PER_PHASE)
        pid = second.pid()
        assert pid is not None
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: second.pid() is None, 30)
        # one node down: its primaries fail over to their replicas on node 1
        ingest.batches(BATCHES_PER_PHASE, for_s=OUTAGE_S)
        down = client.cluster.health()
        assert down["number_of_nodes"] == 1
        second.launch(preflight.java_home())
        restarted_at = time.monotonic()
        ingest.batches(BATCHES_PER_PHASE)  # while node 2 rejoins and recovers its copies
        _health(client, wait_for_nodes="2", wait_for_status="green", timeout_s=240)
        green_at = time.monotonic()
        ingest.batches(2)
    finally:
        stop.set()
        searcher.join(timeout=30)

    client.indices.refresh(index=f"{queries},{events}")
    stored = client.count(index=f"{queries},{events}")["count"]
    on_node_2 = OpenSearch(second.address, timeout=60).count(index=f"{queries},{events}")["count"]
    figures = {
        "records_sent": ingest.sent,
        "records_stored": stored,
        "records_lost": ingest.sent - stored,
        "count_via_node_2": on_node_2,
        "primaries_on_node_2_at_kill": on_2,
        "batch_retries": ingest.batch_retries,
        "searches_answered": searches.answered,
        "search_retries": searches.retried,
        "searches_failed": len(searches.failed),
        "slowest_search_s": round(searches.slowest_s, 2),
        "node_2_down_s": round(restarted_at - killed_at, 1),
        "restart_to_green_s": round(green_at - restarted_at, 1),
    }
    print("cluster figures:", json.dumps(figures))
    assert stored == ingest.sent, figures
    assert on_node_2 == ingest.sent, figures
    assert searches.failed == [], (searches.failed[:3], figures)
    assert searches.answered > 0
