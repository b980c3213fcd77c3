"""Point-in-time slices of a distributed reindex: their state in the checkpoint, and the loop
that hands them to workers and resumes a slice whose worker died.

A slice is OpenSearch's `slice: {id, max}` of a point in time; a document belongs to a slice
by a hash of its `_id`, so slice k holds the same documents on a fresh point in time after a
restart. Each slice is read in `_id` order; its state (the last `_id` written, documents
written, done) goes into the reindex checkpoint after every page a worker wrote:

    worker dies mid-slice (killed process, lost node)  -> the slice goes back on the queue and
                                                          resumes after its last saved page
    the whole run dies                                 -> `--resume` reads the same states

Pages are written with `op_type=create`, so the pages a dead worker wrote after its last saved
one are read again and refused as already there (`existing`), never written twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from serving.errors import ReindexError
from serving.index.reindex_checkpoints import Checkpoint, Checkpoints

__all__ = ["PageDone", "SliceLedger", "SliceRun", "SliceState", "run_slices", "slice_states"]

log = logging.getLogger(__name__)


@dataclass
class SliceState:
    """Where slice `id` of `max` stands: the sort value of its last written page."""

    id: int
    max: int
    after: list[Any] | None = None
    written: int = 0
    existing: int = 0  # documents of re-read pages that were already in the target
    done: bool = False
    worker: int | None = None  # the worker copying it now, or that finished it


@dataclass(frozen=True)
class PageDone:
    """One page a worker wrote: its last sort value, its documents, how many were there."""

    after: list[Any]
    docs: int
    existing: int = 0


@dataclass(frozen=True)
class SliceRun:
    """What a copy took: slices copied, resumes after a worker failed mid-slice, and the
    documents those resumes read again and found already written."""

    slices: int
    resumed: int
    existing: int


# (worker index, slice) -> the pages that worker wrote, in order; raises when the worker fails
CopySlice = Callable[[int, SliceState], Iterator[PageDone]]


def slice_states(checkpoint: Checkpoint, count: int) -> list[SliceState]:
    """The checkpoint's slices, or `count` new ones (a first run, or a checkpoint written by
    the local engine: its slices start over, and what it wrote is kept by `op_type=create`)."""
    if checkpoint.slices:
        return [SliceState(**state) for state in checkpoint.slices]
    return [SliceState(id=i, max=count) for i in range(count)]


class SliceLedger:
    """The slices' states behind one lock, saved into the checkpoint after every page."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        store: Checkpoints,
        states: list[SliceState],
        on_page: Callable[[int], None] | None = None,
    ) -> None:
        self.checkpoint, self.store, self.states = checkpoint, store, states
        self.on_page = on_page  # documents of each page written (a progress bar)
        self._lock = threading.Lock()
        self._save()

    def take(self, state: SliceState, worker: int) -> None:
        with self._lock:
            state.worker = worker
            self._save()

    def record(self, state: SliceState, page: PageDone) -> None:
        with self._lock:
            state.after = page.after
            state.written += page.docs
            state.existing += page.existing
            self._save()
        if self.on_page is not None:
            self.on_page(page.docs)

    def finish(self, state: SliceState) -> None:
        with self._lock:
            state.done = True
            self._save()

    def _save(self) -> None:
        self.checkpoint.slices = [asdict(s) for s in self.states]
        self.checkpoint.written = sum(s.written for s in self.states)
        self.checkpoint.search_after = None  # the local engine's cursor means nothing here
        self.store.save(self.checkpoint)


def run_slices(
    ledger: SliceLedger,
    workers: int,
    copy_slice: CopySlice,
    *,
    retries: int,
    retry_on: tuple[type[BaseException], ...],
    backoff_s: float = 1.0,
    max_backoff_s: float = 30.0,
) -> SliceRun:
    """Copy every unfinished slice of `ledger` with `workers` threads, each running
    `copy_slice(worker, slice)` for the next slice on the queue.

    A slice whose worker raises one of `retry_on` goes back on the queue from its last recorded
    page, after `min(max_backoff_s, backoff_s * 2 ** (attempt - 1))` seconds, at most `retries`
    times; then (or on any other error) the copy stops and `ReindexError` names the slice."""
    todo: queue.Queue[SliceState] = queue.Queue()
    pending = [s for s in ledger.states if not s.done]
    for state in pending:
        todo.put(state)
    attempts = {s.id: 0 for s in pending}
    left = [len(pending)]
    failure: list[BaseException] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        while not failure and left[0]:
            try:
                state = todo.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                ledger.take(state, worker)
                for page in copy_slice(worker, state):
                    ledger.record(state, page)
                    if failure:  # another slice failed for good: stop at this page
                        return
                ledger.finish(state)
                with lock:
                    left[0] -= 1
            except retry_on as exc:
                with lock:
                    attempts[state.id] += 1
                    attempt = attempts[state.id]
                if attempt > retries:
                    failure.append(_slice_failed(state, attempt, exc))
                    return
                wait = min(max_backoff_s, backoff_s * 2 ** (attempt - 1))
                log.warning(
                    "slice %d/%d failed on worker %d after %d documents (%s); resuming it "
                    "from its last page in %.1f s (%d/%d)",
                    *(state.id, state.max, worker, state.written, exc, wait, attempt, retries),
                )
                time.sleep(wait)
                todo.put(state)
            except BaseException as exc:  # handed to the caller, which raises it
                failure.append(exc)
                return

    threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failure:
        if isinstance(failure[0], ReindexError):
            raise failure[0]
        raise ReindexError(f"copying into {ledger.checkpoint.target!r} failed: {failure[0]}")
    existing = sum(s.existing for s in pending)
    return SliceRun(slices=len(pending), resumed=sum(attempts.values()), existing=existing)


def _slice_failed(state: SliceState, attempts: int, exc: BaseException) -> ReindexError:
    return ReindexError(
        f"slice {state.id}/{state.max} failed {attempts} times (last: {exc}); the checkpoint "
        "keeps every slice's progress: run again with --resume to go on"
    )
