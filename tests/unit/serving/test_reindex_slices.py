"""The Ray engine's slices without Ray: their checkpoint, the loop that resumes a slice whose
worker failed, and a worker copying slices of an in-memory OpenSearch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from serving.config import IndexSettings, RayGpus, RaySettings
from serving.encoders.encoder import HashingEncoder
from serving.errors import ReindexError
from serving.index.doc_images import embed_documents
from serving.index.reindex_checkpoints import Checkpoint, CheckpointStore
from serving.index.reindex_ray import RayCopier, SliceWorker
from serving.index.reindex_slices import PageDone, SliceLedger, SliceState, run_slices, slice_states
from tests.unit.serving.opensearch_memory import MemoryOpenSearch


class WorkerDied(Exception):
    """Stands for Ray's error when an actor's process is gone."""


def _checkpoint() -> Checkpoint:
    return Checkpoint("docs__v1__1", "docs__v2__1", "v2", "docs", total=40)


def _pages(slice_id: int) -> list[list[str]]:
    """Slice k's ids, in pages of 2: s<k>-00 .. s<k>-09."""
    ids = [f"s{slice_id}-{i:02d}" for i in range(10)]
    return [ids[i : i + 2] for i in range(0, 10, 2)]


class FakeWorkers:
    """Copies slices from `_pages`, after the slice's saved id; dies once when asked."""

    def __init__(self, die_in: dict[int, int] | None = None) -> None:
        self.die_in = dict(die_in or {})  # slice id -> die after this many pages of a call
        self.written: list[str] = []
        self.starts: list[tuple[int, str | None]] = []  # (slice, the id it resumed after)

    def copy_slice(self, worker: int, state: SliceState) -> Iterator[PageDone]:
        after = state.after[0] if state.after else None
        self.starts.append((state.id, after))
        for n, page in enumerate(p for p in _pages(state.id) if after is None or p[0] > after):
            if self.die_in.get(state.id) == n:
                del self.die_in[state.id]
                raise WorkerDied(f"worker {worker} lost")
            self.written += page
            yield PageDone(after=[page[-1]], docs=len(page))


def test_a_first_run_plans_new_slices_and_a_resume_reads_them_back(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    assert [(s.id, s.max, s.after) for s in slice_states(checkpoint, 3)] == [
        (0, 3, None),
        (1, 3, None),
        (2, 3, None),
    ]
    store = CheckpointStore(tmp_path, "docs")
    ledger = SliceLedger(checkpoint, store, slice_states(checkpoint, 2))
    ledger.take(ledger.states[1], worker=0)
    ledger.record(ledger.states[1], PageDone(after=["d7"], docs=5, existing=1))

    saved = store.load()
    assert saved is not None and saved.written == 5 and saved.search_after is None
    resumed = slice_states(saved, count=8)  # the saved plan wins over a new count
    assert [(s.id, s.max, s.after, s.written, s.existing) for s in resumed] == [
        (0, 2, None, 0, 0),
        (1, 2, ["d7"], 5, 1),
    ]


def test_a_local_engines_checkpoint_starts_the_slices_over(tmp_path: Path) -> None:
    checkpoint = _checkpoint()
    checkpoint.search_after, checkpoint.written = ["d00120"], 120
    states = slice_states(checkpoint, 2)
    assert [s.after for s in states] == [None, None]
    SliceLedger(checkpoint, CheckpointStore(tmp_path, "docs"), states)
    assert checkpoint.search_after is None and checkpoint.written == 0


def test_a_slice_whose_worker_dies_resumes_after_its_last_recorded_page(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "docs")
    ledger = SliceLedger(_checkpoint(), store, slice_states(_checkpoint(), 4))
    workers = FakeWorkers(die_in={2: 3})  # slice 2 dies after 3 pages (6 ids)

    run = run_slices(ledger, 2, workers.copy_slice, retries=1, retry_on=(WorkerDied,), backoff_s=0)

    every = [i for s in range(4) for page in _pages(s) for i in page]
    assert sorted(workers.written) == sorted(every)  # each id once: none lost, none repeated
    assert (2, "s2-05") in workers.starts  # went on after its last page, not from the start
    assert (run.slices, run.resumed) == (4, 1)
    saved = store.load()
    assert saved is not None and saved.written == 40
    assert all(s["done"] for s in saved.slices or [])


def test_a_slice_that_keeps_failing_stops_the_copy_with_its_progress_saved(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(tmp_path, "docs")
    ledger = SliceLedger(_checkpoint(), store, slice_states(_checkpoint(), 1))

    def always_dies(worker: int, state: SliceState) -> Iterator[PageDone]:
        yield PageDone(after=[f"x{state.written}"], docs=2)
        raise WorkerDied("node lost")

    with pytest.raises(ReindexError, match=r"slice 0/1 failed 3 times.*node lost.*--resume"):
        run_slices(ledger, 1, always_dies, retries=2, retry_on=(WorkerDied,), backoff_s=0)
    saved = store.load()
    assert saved is not None and saved.slices is not None
    assert saved.slices[0]["written"] == 6 and not saved.slices[0]["done"]


def test_an_error_that_is_not_a_lost_worker_is_not_retried(tmp_path: Path) -> None:
    ledger = SliceLedger(_checkpoint(), CheckpointStore(tmp_path, "docs"), [SliceState(0, 1)])
    calls: list[int] = []

    def refused(worker: int, state: SliceState) -> Iterator[PageDone]:
        calls.append(state.id)
        raise ValueError("mapping refused")
        yield  # a generator, as a worker's pages are

    with pytest.raises(ReindexError, match="mapping refused"):
        run_slices(ledger, 1, refused, retries=5, retry_on=(WorkerDied,), backoff_s=0)
    assert calls == [0]


def test_a_resumed_copy_skips_finished_slices(tmp_path: Path) -> None:
    states = [SliceState(0, 2, ["s0-09"], 10, done=True), SliceState(1, 2, ["s1-03"], 4)]
    ledger = SliceLedger(_checkpoint(), CheckpointStore(tmp_path, "docs"), states)
    workers = FakeWorkers()

    run = run_slices(ledger, 2, workers.copy_slice, retries=0, retry_on=(WorkerDied,))

    assert workers.starts == [(1, "s1-03")] and run.slices == 1
    assert workers.written == [f"s1-{i:02d}" for i in range(4, 10)]


def test_workers_copying_every_slice_write_each_document_once_with_its_vector() -> None:
    settings = IndexSettings(image_field=None)
    client = MemoryOpenSearch()
    source = {f"d{i:03d}": {"text": f"wing lift {i}", "embedding": [0.0]} for i in range(37)}
    client.add_index("docs__v1__1", source)
    client.add_index("docs__v2__1", {})
    encoder = HashingEncoder(16, "v2")
    workers = [SliceWorker(lambda: client, lambda: encoder, settings, 4) for _ in range(2)]
    client.create_pit(index="docs__v1__1", params={})

    pages = [
        page
        for k in range(3)
        for page in workers[k % 2].copy_slice(
            "pit-1", "docs__v1__1", "docs__v2__1", SliceState(k, 3)
        )
    ]

    written = client.docs["docs__v2__1"]
    assert sorted(written) == sorted(source) and sum(p.docs for p in pages) == 37
    assert all(p.existing == 0 for p in pages)  # the slices split the documents: none twice
    docs = [{"_id": i, "text": source[i]["text"]} for i in sorted(source)]
    expected = embed_documents(encoder, docs, settings)
    stored = np.asarray([written[d["_id"]]["embedding"] for d in docs])
    np.testing.assert_allclose(stored, expected, atol=1e-6)

    again = list(workers[0].copy_slice("pit-1", "docs__v1__1", "docs__v2__1", SliceState(0, 3)))
    assert sum(p.existing for p in again) == sum(p.docs for p in again) > 0  # none rewritten


@pytest.mark.parametrize(
    ("gpus", "cluster", "actors", "each"),
    [
        (RayGpus.auto, {"CPU": 2.0}, 2, 0.0),
        (RayGpus.auto, {"CPU": 16.0, "GPU": 4.0}, 2, 1.0),
        (RayGpus.auto, {"CPU": 16.0, "GPU": 1.0}, 4, 0.25),  # more actors than GPUs: shared
        (RayGpus.never, {"CPU": 16.0, "GPU": 4.0}, 2, 0.0),
        (RayGpus.always, {"CPU": 2.0}, 2, 1.0),
    ],
)
def test_actors_take_the_clusters_gpus_when_it_has_them(
    gpus: RayGpus, cluster: dict, actors: int, each: float
) -> None:
    ray = SimpleNamespace(cluster_resources=lambda: cluster)
    settings = RaySettings(actors=actors, gpus=gpus)
    copier = RayCopier(ray, None, lambda: None, lambda: None, IndexSettings(), settings)  # type: ignore[arg-type]
    assert copier._gpus_per_actor() == each
