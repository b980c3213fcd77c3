"""Resumable reindex: re-embed the live index with another model, then one atomic alias swap.

    1. create `<prefix>__<version>__<n>`, write the checkpoint, point `docs_next` at it (from
       then on every replica dual-writes documents and deletes to it, see `index_versions`)
    2. read the source with point-in-time + search_after sorted by `_id` (vectors excluded),
       encode each page on this thread while a writer thread bulk-writes the previous one
       (bounded queue); the writer saves the checkpoint (last sort value, counts) per batch
    3. reconcile ids (a write that raced step 1 or a delete that raced a page), check counts
    4. one `_aliases` call: `docs` -> new index, `docs_next` removed; prune retired indexes

The checkpoint is a JSON file per destination alias, or with `serving.state.backend:
opensearch` a document, so a reindex resumed on another host continues where it stopped
(serving/index/reindex_checkpoints.py); the caller passes a folder or a factory.

Writes use `op_type=create`, so a page re-read after a crash or a document already dual-written
is never written twice or overwritten with older text. The sort on `_id` (not `_shard_doc`)
makes the checkpoint valid for a fresh point-in-time after a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from opensearchpy.exceptions import OpenSearchException
from tqdm import tqdm

from serving.encoders.encoder import Encoder
from serving.encoders.encoder_pair import document_encoder
from serving.errors import ReindexError, ReindexPendingError
from serving.index.doc_images import ImageReader, embed_documents
from serving.index.index_versions import alias_holders, move_aliases, prune_indexes
from serving.index.indexer import IndexReport
from serving.index.reindex_checkpoints import (
    Checkpoint,
    Checkpoints,
    CheckpointStores,
    checkpoint_store,
)
from serving.index.reindex_pages import close_pit, create_documents, open_pit, read_pages
from serving.index.vector_index import DocumentIndex

__all__ = ["Copier", "Reindexer", "abandon"]

log = logging.getLogger(__name__)

QUEUE_DEPTH = 2
ID_PAGE = 5000


class _ReportingStore:
    """`store`, calling `report` after each save: a copier's progress reaches `on_progress`."""

    def __init__(self, store: Checkpoints, report: Callable[[Checkpoint], None]) -> None:
        self._store, self._report = store, report
        self.location = store.location

    def load(self) -> Checkpoint | None:
        return self._store.load()

    def save(self, checkpoint: Checkpoint) -> None:
        self._store.save(checkpoint)
        self._report(checkpoint)

    def clear(self) -> None:
        self._store.clear()


class Copier(Protocol):
    """Copies the documents of `checkpoint.source` into `checkpoint.target` with new vectors,
    saving `checkpoint` (through `store`) as batches land: the engine behind a reindex."""

    def copy(self, checkpoint: Checkpoint, store: Checkpoints) -> None: ...


class Reindexer:
    """Rebuilds the index behind `alias` (default: the live alias) with `encoder`'s model (a
    query model's document model: the index holds document vectors)."""

    def __init__(
        self,
        doc_index: DocumentIndex,
        encoder: Encoder,
        checkpoints: Path | CheckpointStores,
        *,
        batch_size: int = 256,
        progress: bool = True,
        alias: str | None = None,
        images: ImageReader | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        copier: Copier | None = None,
    ) -> None:
        self.doc_index = doc_index
        # Documents already in the index: the API admitted only data: URIs and allowed hosts,
        # so a local path there was written by `clicktune index --trust-local-images`.
        self.images = images or ImageReader(doc_index.settings.images, local_paths=True)
        self.encoder = document_encoder(encoder)
        self.batch_size = batch_size
        self.progress = progress
        # (written, total) when the copy starts or resumes, then after each written batch (from
        # the writer thread): how a log-only caller (the tuner worker) reports progress
        self.on_progress = on_progress
        self.alias = alias or doc_index.alias
        self.store = checkpoint_store(checkpoints, self.alias)
        # None: this process reads, embeds (one thread) and writes (another); the Ray engine
        # (serving/index/reindex_ray.py) hands the copy to an actor pool, the rest is the same
        self.copier = copier
        self._client = doc_index.client

    def pending(self) -> Checkpoint | None:
        """The unfinished reindex to `alias`, if one was interrupted."""
        return self.store.load()

    def run(self, resume: bool = False) -> IndexReport:
        """Reindex (or resume the interrupted one) and swap `alias` onto the new index."""
        started = time.perf_counter()
        checkpoint = self._start_or_resume(resume)
        if self.alias in self._aliases_of(checkpoint.target):  # killed right after the swap
            self.store.clear()
            return self._report(checkpoint, started, previous=None)
        if self.copier is None:
            self._copy(checkpoint)
        else:
            self._report_progress(checkpoint)
            self.copier.copy(checkpoint, _ReportingStore(self.store, self._report_progress))
        self._reconcile(checkpoint)
        previous = self._swap(checkpoint)
        self.store.clear()
        removed = prune_indexes(self.doc_index, self.doc_index.settings.retention)
        if removed:
            log.info("retention removed %s", removed)
        return self._report(checkpoint, started, previous)

    def _start_or_resume(self, resume: bool) -> Checkpoint:
        checkpoint = self.store.load()
        if checkpoint is not None and not resume:
            raise ReindexPendingError(
                f"an unfinished reindex of {checkpoint.source!r} into {checkpoint.target!r} "
                f"(model {checkpoint.model_version!r}, {checkpoint.written}/{checkpoint.total} "
                f"documents) exists; run again with --resume to finish it"
            )
        if checkpoint is None:
            if resume:
                log.info("no interrupted reindex to %r: starting a new one", self.alias)
            return self._start()
        if checkpoint.model_version != self.encoder.version:
            raise ReindexError(
                f"the interrupted reindex is for model {checkpoint.model_version!r}, not "
                f"{self.encoder.version!r}; resume it with --model {checkpoint.model_version}"
            )
        return checkpoint

    def _start(self) -> Checkpoint:
        source = self.doc_index.live_index()
        if source is None:
            raise ReindexError(
                f"alias {self.doc_index.alias!r} does not exist: nothing to reindex; "
                "run `clicktune index` first"
            )
        target = self.doc_index.create_version(self.encoder.version, self.encoder.dimension)
        checkpoint = Checkpoint(
            source=source,
            target=target,
            model_version=self.encoder.version,
            alias=self.alias,
            total=self.doc_index.refresh(source),
            started_at=time.time(),
        )
        self.store.save(checkpoint)
        next_alias = self.doc_index.settings.next_alias
        move_aliases(self.doc_index, [{"add": {"index": target, "alias": next_alias}}])
        return checkpoint

    def _copy(self, checkpoint: Checkpoint) -> None:
        work: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        failure: list[BaseException] = []
        bar = tqdm(
            total=checkpoint.total,
            initial=checkpoint.written,
            unit="docs",
            desc=checkpoint.target,
            disable=not self.progress,
        )
        self._report_progress(checkpoint)
        writer = threading.Thread(
            target=self._write_loop, args=(work, checkpoint, bar, failure), daemon=True
        )
        writer.start()
        try:
            for docs, last_sort in self._pages(checkpoint.source, checkpoint.search_after):
                vectors = embed_documents(self.encoder, docs, self.doc_index.settings, self.images)
                self._put(work, (docs, vectors, last_sort), failure)
        finally:
            self._put(work, None, failure)
            writer.join()
            bar.close()
        if failure:
            raise ReindexError(f"writing to {checkpoint.target!r} failed: {failure[0]}")

    def _report_progress(self, checkpoint: Checkpoint) -> None:
        if self.on_progress is not None:
            self.on_progress(checkpoint.written, checkpoint.total)

    @staticmethod
    def _put(work: queue.Queue, item: Any, failure: list[BaseException]) -> None:
        while not failure:
            try:
                work.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _write_loop(
        self, work: queue.Queue, checkpoint: Checkpoint, bar: tqdm, failure: list
    ) -> None:
        try:
            while (item := work.get()) is not None:
                docs, vectors, last_sort = item
                self._create_all(checkpoint.target, docs, vectors)
                checkpoint.written += len(docs)
                checkpoint.search_after = last_sort
                self.store.save(checkpoint)
                bar.update(len(docs))
                self._report_progress(checkpoint)
        except BaseException as exc:  # handed to the reading thread, which raises it
            failure.append(exc)

    def _create_all(self, index: str, docs: list[dict], vectors: Any) -> None:
        create_documents(self._client, index, docs, vectors, self.doc_index.settings.vector_field)

    def _pages(self, source: str, after: list[Any] | None) -> Iterator[tuple[list[dict], list]]:
        """Pages of `source` documents (vector excluded) in `_id` order after `after`."""
        pit_id = open_pit(self._client, source)
        try:
            field = self.doc_index.settings.vector_field
            yield from read_pages(self._client, pit_id, source, field, self.batch_size, after)
        finally:
            close_pit(self._client, pit_id, source)

    def _reconcile(self, checkpoint: Checkpoint) -> None:
        """Copy ids the source has and the target lacks; delete ids only the target has."""
        self.doc_index.refresh(checkpoint.source)
        self.doc_index.refresh(checkpoint.target)
        source_ids = set(self._ids(checkpoint.source))
        target_ids = set(self._ids(checkpoint.target))
        missing = sorted(source_ids - target_ids)
        extra = sorted(target_ids - source_ids)
        if missing:
            found = self.doc_index.get_documents(missing, index=checkpoint.source)
            docs = [{"_id": i, **found[i]} for i in missing if i in found]
            vectors = embed_documents(self.encoder, docs, self.doc_index.settings, self.images)
            self._create_all(checkpoint.target, docs, vectors)
        for doc_id in extra:
            self._client.delete(index=checkpoint.target, id=doc_id, params={"ignore": 404})
        if missing or extra:
            log.info("reconciled %d missing and %d extra ids", len(missing), len(extra))

    def _ids(self, index: str) -> Iterator[str]:
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": ID_PAGE, "sort": [{"_id": "asc"}], "_source": False}
            if after is not None:
                body["search_after"] = after
            hits = self._client.search(index=index, body=body)["hits"]["hits"]
            if not hits:
                return
            after = hits[-1]["sort"]
            yield from (h["_id"] for h in hits)

    def _swap(self, checkpoint: Checkpoint) -> str | None:
        source_count = self.doc_index.refresh(checkpoint.source)
        count = self.doc_index.refresh(checkpoint.target)
        if count != source_count:
            raise ReindexError(
                f"index {checkpoint.target!r} holds {count} documents but the source "
                f"{checkpoint.source!r} holds {source_count}; the alias was not moved "
                "(run again with --resume to reconcile)"
            )
        previous = alias_holders(self.doc_index, self.alias)
        actions: list[dict[str, Any]] = [
            {"remove": {"index": old, "alias": self.alias}}
            for old in previous
            if old != checkpoint.target
        ]
        actions += [
            {"add": {"index": checkpoint.target, "alias": self.alias}},
            {"remove": {"index": checkpoint.target, "alias": self.doc_index.settings.next_alias}},
        ]
        move_aliases(self.doc_index, actions)
        checkpoint.written = count
        return previous[0] if previous else None

    def _aliases_of(self, index: str) -> set[str]:
        try:
            found = self._client.indices.get_alias(index=index)
        except OpenSearchException as exc:
            raise ReindexError(f"cannot read the aliases of {index!r}: {exc}") from exc
        return {a for body in found.values() for a in body.get("aliases", {})}

    def _report(self, checkpoint: Checkpoint, started: float, previous: str | None) -> IndexReport:
        return IndexReport(
            index=checkpoint.target,
            docs=self.doc_index.refresh(checkpoint.target),
            seconds=round(time.perf_counter() - started, 3),
            alias=self.alias,
            previous=previous,
        )


def abandon(
    doc_index: DocumentIndex, checkpoints: Path | CheckpointStores, alias: str | None = None
) -> str:
    """Drop an interrupted reindex: its checkpoint, `docs_next` and the partial index."""
    store = checkpoint_store(checkpoints, alias or doc_index.alias)
    checkpoint = store.load()
    if checkpoint is None:
        raise ReindexError(f"no interrupted reindex to abandon ({store.location} is empty)")
    next_alias = doc_index.settings.next_alias
    if checkpoint.target in alias_holders(doc_index, next_alias):
        move_aliases(doc_index, [{"remove": {"index": checkpoint.target, "alias": next_alias}}])
    doc_index.delete(checkpoint.target)
    store.clear()
    return checkpoint.target
