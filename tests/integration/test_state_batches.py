"""The tuner's batches kept in the real OpenSearch (`serving.state.backend: opensearch`): a large
batch round trips, other workers see every batch past one read's page, and of two workers
freezing one id at the same moment one wins. Each test uses its own index and deletes it.

The behaviour both backends share (release, reload, history, hold-outs, a duplicate freeze) is
tested on each through `batch_stores` in tests/unit/tuner/test_tuner_batches.py and
test_tuner_holdout_rotation.py.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from serving.state.documents import OpenSearchDocuments
from tests.unit.tuner.test_tuner_batches import FakeSessions, at, logged
from tuner.batch_store import OpenSearchBatchStore
from tuner.batches import Batch, release_batch
from tuner.errors import BatchConflictError

pytestmark = pytest.mark.integration


@pytest.fixture()
def documents(state_documents: OpenSearchDocuments) -> OpenSearchDocuments:
    return state_documents  # tests/conftest.py: a real index of the test's own


def _elsewhere(documents: OpenSearchDocuments, scope: str = "docs") -> OpenSearchBatchStore:
    """The store another worker builds: its own client wrapper, the same index."""
    return OpenSearchBatchStore(OpenSearchDocuments(documents.client, documents.index), scope)


def test_a_large_batch_round_trips_and_every_batch_is_listed_past_one_page(
    documents: OpenSearchDocuments,
) -> None:
    here = OpenSearchBatchStore(documents, "docs", page=2)
    big = FakeSessions([logged(f"session-{i:05d}", i / 1000) for i in range(5000)])
    first = release_batch(here, big, at(10), timedelta(0)).batch
    for n in range(1, 5):  # four more, so `list` reads three pages of two
        release_batch(here, FakeSessions([logged(f"s{n}", 10 + n)]), at(10 + n + 0.5), timedelta(0))
    there = _elsewhere(documents)
    listed = there.list()
    assert [b.batch_id for b in listed] == [f"batch-{n:04d}" for n in range(1, 6)]
    assert listed[0] == first and len(there.get("batch-0001").session_ids) == 5000
    assert _elsewhere(documents, "other-alias").list() == []  # its own sequence
    mapping = documents.client.indices.get_mapping(index=documents.index)
    indexed = mapping[documents.index]["mappings"]["properties"]
    assert "batch" not in indexed, "session ids are kept, not indexed"


def test_of_two_workers_freezing_one_id_at_once_exactly_one_wins(
    documents: OpenSearchDocuments,
) -> None:
    def batch(worker: int) -> Batch:
        end = at(worker).isoformat()
        return Batch("batch-0001", None, end, end, 1, 1, 0, (f"session-of-{worker}",))

    outcomes: list[str] = []
    start = threading.Barrier(4)

    def freeze(worker: int) -> None:
        start.wait()
        try:
            _elsewhere(documents).save(batch(worker))
            outcomes.append(f"won {worker}")
        except BatchConflictError:
            outcomes.append("refused")

    threads = [threading.Thread(target=freeze, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    [winner] = [o for o in outcomes if o.startswith("won")]
    assert outcomes.count("refused") == 3
    assert _elsewhere(documents).list() == [batch(int(winner.split()[1]))]
