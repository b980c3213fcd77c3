"""JSON records kept as documents of one OpenSearch index, with optimistic concurrency.

The A/B experiment (serving/rollout/experiment_store.py), reindex checkpoints
(serving/index/reindex_checkpoints.py) and the tuner's batches (tuner/batch_store.py) are each
one document by id: read it, write it only if nobody changed it since (`if_seq_no` /
`if_primary_term`), create it only if absent (`op_type=create`), delete it only if unchanged. A
GET (or mget) by id is real-time in OpenSearch, so no refresh is needed for another host to see
a write.

Errors: `StateError` (OpenSearch refused or could not be reached: the message names the index,
the cluster's address and the setting that chose it) and `StateConflictError` (the document
changed, appeared or vanished since it was read).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError, NotFoundError, OpenSearchException

from ingest.index_layout import create_internal_index
from serving.errors import StateConflictError, StateError

__all__ = ["OpenSearchDocuments", "Stored"]

RULE = "serving.state.backend=opensearch keeps this state there: check opensearch.url, or use local"
# what `newest` filters and sorts on; the rest of a body is kept, not indexed
MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "kind": {"type": "keyword"},
        "scope": {"type": "keyword"},
        "at": {"type": "date"},
    },
}


@dataclass(frozen=True)
class Stored:
    """A document as read: its body and the (seq_no, primary_term) a conditional write needs."""

    body: dict[str, Any]
    seq: tuple[int, int]


class OpenSearchDocuments:
    """Documents of `index` by id; the index is created on first use with `replicas`."""

    def __init__(self, client: OpenSearch, index: str, replicas: int | str = "0-1") -> None:
        """`replicas`: a count or an auto-expand range (`opensearch.internal_replicas`)."""
        self.client = client
        self.index = index
        self.replicas = replicas
        self._ready = False

    @property
    def where(self) -> str:
        """The index and the cluster, as error messages name them."""
        hosts = getattr(getattr(self.client, "transport", None), "hosts", None) or []
        urls = [f"{h.get('host')}:{h.get('port')}" for h in hosts if isinstance(h, dict)]
        return f"OpenSearch index {self.index!r} at {', '.join(urls) or 'the configured cluster'}"

    def ensure_index(self) -> None:
        """Create the index unless it exists (a keyword `kind`; bodies are not indexed)."""
        if self._ready:
            return
        try:
            create_internal_index(self.client, self.index, self.replicas, MAPPINGS)
        except OpenSearchException as exc:
            raise self._unreachable(f"create {self.where}", exc) from exc
        self._ready = True

    def get(self, doc_id: str) -> Stored | None:
        """The document `doc_id` as stored now, or None."""
        self.ensure_index()
        try:
            found = self.client.get(index=self.index, id=doc_id)
        except NotFoundError:
            return None
        except OpenSearchException as exc:
            raise self._unreachable(f"read {doc_id!r} from {self.where}", exc) from exc
        return Stored(found["_source"], (found["_seq_no"], found["_primary_term"]))

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Stored]:
        """The documents of `doc_ids` that exist now, by id, in one real-time request."""
        self.ensure_index()
        try:
            docs = self.client.mget(index=self.index, body={"ids": list(doc_ids)})["docs"]
        except OpenSearchException as exc:
            raise self._unreachable(f"read {len(doc_ids)} ids from {self.where}", exc) from exc
        return {
            d["_id"]: Stored(d["_source"], (d["_seq_no"], d["_primary_term"]))
            for d in docs
            if d.get("found")
        }

    def put(
        self, doc_id: str, body: dict[str, Any], *, after: tuple[int, int] | None = None
    ) -> tuple[int, int]:
        """Write `doc_id`: only if absent (`after` None), else only if still at `after`.

        Returns the new (seq_no, primary_term); `StateConflictError` when the condition fails."""
        self.ensure_index()
        params: dict[str, Any] = {"op_type": "create"}
        if after is not None:
            params = {"if_seq_no": after[0], "if_primary_term": after[1]}
        try:
            answer = self.client.index(index=self.index, id=doc_id, body=body, params=params)
        except ConflictError as exc:
            state = "already exists" if after is None else "changed since it was read"
            raise StateConflictError(f"{doc_id!r} in {self.where} {state}") from exc
        except OpenSearchException as exc:
            raise self._unreachable(f"write {doc_id!r} to {self.where}", exc) from exc
        return answer["_seq_no"], answer["_primary_term"]

    def overwrite(self, doc_id: str, body: dict[str, Any]) -> None:
        """Write `doc_id` whatever is there (a record nobody else writes, e.g. an archive);
        searchable (`newest`) once this returns."""
        self.ensure_index()
        try:
            self.client.index(
                index=self.index, id=doc_id, body=body, params={"refresh": "wait_for"}
            )
        except OpenSearchException as exc:
            raise self._unreachable(f"write {doc_id!r} to {self.where}", exc) from exc

    def newest(self, kind: str, scope: str) -> dict[str, Any] | None:
        """The body of the `kind` document of `scope` with the latest `at`, or None."""
        self.ensure_index()
        body = {
            "query": {"bool": {"filter": [{"term": {"kind": kind}}, {"term": {"scope": scope}}]}},
            "sort": [{"at": "desc"}],
            "size": 1,
        }
        try:
            hits = self.client.search(index=self.index, body=body)["hits"]["hits"]
        except OpenSearchException as exc:
            raise self._unreachable(f"search {self.where}", exc) from exc
        return hits[0]["_source"] if hits else None

    def delete(self, doc_id: str, *, after: tuple[int, int] | None = None) -> bool:
        """Delete `doc_id` (only if still at `after`, when given); False if it was not there.

        With `after`, a document deleted meanwhile is a conflict too (OpenSearch answers 409)."""
        self.ensure_index()
        params: dict[str, Any] = {}
        if after is not None:
            params = {"if_seq_no": after[0], "if_primary_term": after[1]}
        try:
            self.client.delete(index=self.index, id=doc_id, params=params)
        except NotFoundError:
            return False
        except ConflictError as exc:
            raise StateConflictError(
                f"{doc_id!r} in {self.where} changed since it was read"
            ) from exc
        except OpenSearchException as exc:
            raise self._unreachable(f"delete {doc_id!r} from {self.where}", exc) from exc
        return True

    @staticmethod
    def _unreachable(what: str, exc: Exception) -> StateError:
        return StateError(f"cannot {what}: {exc} ({RULE})")
