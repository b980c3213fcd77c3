"""Released batches kept in OpenSearch, so tuner workers on any host share them.

The same interface as the file store (`tuner.batches.BatchStore`; both are `Batches`), chosen by
`serving.state.backend: opensearch`. One document per batch and one per held-out record, in
`serving.state.batches_index`, scoped by the live document alias (two deployments on one
cluster keep two sequences):

    batch:<scope>:batch-0003     {"kind": "batch", "scope", "at": released_at, "batch": {...}}
    holdout:<scope>:batch-0003   {"kind": "holdout", "scope", "batch_id", "queries": [...]}

A batch document is the file store's record as is: its session ids (thousands in a busy window,
about 40 bytes each) are a plain array in `_source`, not indexed, since only the id reads them.
A batch is created only if its id is free (`op_type=create`): the same record again is a no-op,
a different one `BatchConflictError`. Ids are dense (`release_batch` names the one after those
it listed, and a create never skips one), so `list` reads them by id, `page` at a time, until
the first missing one: real-time reads, no search and no refresh to wait for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict

from serving.errors import StateConflictError, StateError
from serving.state.documents import OpenSearchDocuments, Stored
from tuner.batches import (
    Batch,
    already_released,
    batch_name,
    batch_of,
    check_batch_id,
    not_released,
)
from tuner.errors import BatchStoreError

__all__ = ["OpenSearchBatchStore"]


class OpenSearchBatchStore:
    """Released batches of `scope` as OpenSearch documents, in release order."""

    def __init__(self, documents: OpenSearchDocuments, scope: str, page: int = 20) -> None:
        """`page`: batches read per request by `list` (each holds its session ids)."""
        self.documents = documents
        self.scope = scope
        self.page = page

    def list(self) -> list[Batch]:
        batches: list[Batch] = []
        while True:
            names = [batch_name(n) for n in range(len(batches) + 1, len(batches) + 1 + self.page)]
            found = self._read_many([self._id(name) for name in names])
            for name in names:
                stored = found.get(self._id(name))
                if stored is None:
                    return batches
                batches.append(self._batch(stored))

    def get(self, batch_id: str) -> Batch:
        check_batch_id(batch_id)
        stored = self._read(self._id(batch_id))
        if stored is None:
            raise not_released(batch_id, self.list())
        return self._batch(stored)

    def save(self, batch: Batch) -> None:
        """Record `batch` if its id is free (create-only); the same record again is a no-op."""
        doc_id = self._id(batch.batch_id)
        body = {"kind": "batch", "scope": self.scope, "at": batch.released_at}
        try:
            self.documents.put(doc_id, {**body, "batch": asdict(batch)})
        except StateConflictError:
            stored = self._read(doc_id)
            if stored is None or self._batch(stored) != batch:
                raise already_released(batch, self.documents.where) from None
        except StateError as exc:
            raise BatchStoreError(f"cannot record {batch.batch_id}: {exc}") from exc

    def save_holdout(self, batch_id: str, query_keys: Iterable[str]) -> None:
        """Record the query keys `batch_id` held out of its training (a rerun rewrites it)."""
        body = {"kind": "holdout", "scope": self.scope, "batch_id": batch_id}
        try:
            self.documents.overwrite(
                self._holdout_id(batch_id), {**body, "queries": sorted(set(query_keys))}
            )
        except StateError as exc:
            raise BatchStoreError(f"cannot record the hold-out of {batch_id}: {exc}") from exc

    def holdout(self, batch_id: str) -> frozenset[str] | None:
        """The query keys `batch_id` held out, or None when none were recorded."""
        stored = self._read(self._holdout_id(batch_id))
        return None if stored is None else frozenset(stored.body["queries"])

    def _id(self, batch_id: str) -> str:
        return f"batch:{self.scope}:{batch_id}"

    def _holdout_id(self, batch_id: str) -> str:
        return f"holdout:{self.scope}:{batch_id}"

    def _read(self, doc_id: str) -> Stored | None:
        try:
            return self.documents.get(doc_id)
        except StateError as exc:
            raise BatchStoreError(f"cannot read the released batches: {exc}") from exc

    def _read_many(self, doc_ids: Sequence[str]) -> dict[str, Stored]:
        try:
            return self.documents.get_many(doc_ids)
        except StateError as exc:
            raise BatchStoreError(f"cannot read the released batches: {exc}") from exc

    def _batch(self, stored: Stored) -> Batch:
        try:
            return batch_of(stored.body["batch"])
        except (KeyError, TypeError) as exc:
            raise BatchStoreError(
                f"a document in {self.documents.where} is not a released batch: {exc}"
            ) from exc
