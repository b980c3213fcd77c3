"""The document index: versioned k-NN indexes in OpenSearch behind one alias.

Each model version gets its own index `<prefix>__<model-version>__<n>`; the alias (`docs`)
points at exactly one of them and moves in a single atomic `_aliases` call, so searches never
see a partial index and the previous index stays for rollback.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException, RequestError
from opensearchpy.helpers import streaming_bulk

from serving.config import IndexSettings
from serving.errors import BulkIndexError, DocumentIndexError

__all__ = ["DocumentIndex", "Hit", "SearchIndex"]

MAX_ERRORS_KEPT = 100


@dataclass(frozen=True)
class Hit:
    """One search result: document id, similarity score, the index it came from, its fields."""

    id: str
    score: float
    index: str
    source: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


class SearchIndex(Protocol):
    """What the HTTP API needs from the document index."""

    def live_index(self) -> str | None: ...

    def search_knn(
        self, vector: Sequence[float], k: int, index: str | None = None
    ) -> list[Hit]: ...


class DocumentIndex:
    """Versioned k-NN indexes behind `settings.alias`, on an injected OpenSearch client."""

    def __init__(self, client: OpenSearch, settings: IndexSettings) -> None:
        self.client = client
        self.settings = settings

    @property
    def alias(self) -> str:
        return self.settings.alias

    def create_version(self, model_version: str, dimension: int) -> str:
        """Create the next free index `<prefix>__<model_version>__<n>` and return its name."""
        base = f"{self.settings.prefix}__{model_version}__"
        for _attempt in range(5):  # another writer may take the same number in between
            name = f"{base}{self._next_number(base)}"
            try:
                self.client.indices.create(
                    index=name, body=self._index_body(model_version, dimension)
                )
                return name
            except RequestError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise DocumentIndexError(f"cannot create index {name!r}: {exc}") from exc
            except OpenSearchException as exc:
                raise DocumentIndexError(f"cannot create index {name!r}: {exc}") from exc
        raise DocumentIndexError(f"no free index name for {base}<n> after 5 attempts")

    def bulk_index(
        self, index: str, docs: Iterable[dict[str, Any]], vectors: Iterable[Sequence[float]]
    ) -> int:
        """Write `docs` (each with `_id`) and their vectors to `index`; return the count written."""
        actions = (self._action(index, doc, vec) for doc, vec in zip(docs, vectors, strict=True))
        written = 0
        errors: list[dict[str, Any]] = []
        try:
            for ok, item in streaming_bulk(
                self.client,
                actions,
                chunk_size=self.settings.bulk_batch_size,
                raise_on_error=False,
                max_retries=3,
                initial_backoff=1,
                max_backoff=30,
            ):
                if ok:
                    written += 1
                elif len(errors) < MAX_ERRORS_KEPT:
                    errors.append(item)
        except OpenSearchException as exc:
            raise DocumentIndexError(f"bulk write to {index!r} failed: {exc}") from exc
        if errors:
            raise BulkIndexError(
                f"{len(errors)}+ documents refused by {index!r}; first: {errors[0]}", errors
            )
        return written

    def refresh(self, index: str) -> int:
        """Make everything written to `index` searchable; return its document count."""
        try:
            self.client.indices.refresh(index=index)
            return int(self.client.count(index=index)["count"])
        except OpenSearchException as exc:
            raise DocumentIndexError(f"cannot refresh index {index!r}: {exc}") from exc

    def delete(self, index: str) -> None:
        """Delete `index` (a partial or retired version); refuses the one the alias points at."""
        if index in self._holders():
            raise DocumentIndexError(f"index {index!r} is live behind {self.alias!r}; not deleted")
        try:
            self.client.indices.delete(index=index)
        except OpenSearchException as exc:
            raise DocumentIndexError(f"cannot delete index {index!r}: {exc}") from exc

    def swap_alias(self, index: str) -> str | None:
        """Point the alias at `index` in one atomic call; return the index it left (if any)."""
        previous = self._holders()
        actions: list[dict[str, Any]] = [
            {"remove": {"index": old, "alias": self.alias}} for old in previous if old != index
        ]
        actions.append({"add": {"index": index, "alias": self.alias}})
        try:
            self.client.indices.update_aliases(body={"actions": actions})
        except OpenSearchException as exc:
            raise DocumentIndexError(
                f"cannot move alias {self.alias!r} to {index!r}: {exc}"
            ) from exc
        return previous[0] if previous else None

    def live_index(self) -> str | None:
        """The index the alias points at, or None when there is no alias yet."""
        holders = self._holders()
        if len(holders) > 1:
            raise DocumentIndexError(f"alias {self.alias!r} points at several indexes: {holders}")
        return holders[0] if holders else None

    def search_knn(self, vector: Sequence[float], k: int, index: str | None = None) -> list[Hit]:
        """The `k` nearest documents to `vector` in `index` (default: the alias), best first."""
        target = index or self.alias
        query = {
            "vector": [float(x) for x in vector],
            "k": k,
            "method_parameters": {"ef_search": max(self.settings.ef_search, k)},
        }
        body = {
            "size": k,
            "_source": {"excludes": [self.settings.vector_field]},
            "query": {"knn": {self.settings.vector_field: query}},
        }
        try:
            response = self.client.search(index=target, body=body)
        except OpenSearchException as exc:
            raise DocumentIndexError(f"k-NN search in {target!r} failed: {exc}") from exc
        return [
            Hit(id=h["_id"], score=float(h["_score"]), index=h["_index"], source=h["_source"])
            for h in response["hits"]["hits"]
        ]

    def get_documents(self, ids: Sequence[str], index: str | None = None) -> dict[str, dict]:
        """The stored fields (vector excluded) of the documents `ids` that exist, by id."""
        target = index or self.alias
        found: dict[str, dict] = {}
        for start in range(0, len(ids), 1000):
            try:
                response = self.client.mget(
                    index=target,
                    body={"ids": list(ids[start : start + 1000])},
                    params={"_source_excludes": self.settings.vector_field},
                )
            except OpenSearchException as exc:
                raise DocumentIndexError(f"cannot read documents from {target!r}: {exc}") from exc
            found.update({d["_id"]: d["_source"] for d in response["docs"] if d.get("found")})
        return found

    def _holders(self) -> list[str]:
        try:
            return sorted(self.client.indices.get_alias(name=self.alias))
        except NotFoundError:
            return []
        except OpenSearchException as exc:
            raise DocumentIndexError(f"cannot read alias {self.alias!r}: {exc}") from exc

    def _next_number(self, base: str) -> int:
        try:
            names = self.client.indices.get(index=f"{base}*", params={"expand_wildcards": "all"})
        except OpenSearchException as exc:
            raise DocumentIndexError(f"cannot list indexes {base}*: {exc}") from exc
        pattern = re.compile(re.escape(base) + r"(\d+)$")
        numbers = [int(m.group(1)) for n in names if (m := pattern.match(n))]
        return max(numbers, default=0) + 1

    def _index_body(self, model_version: str, dimension: int) -> dict[str, Any]:
        s = self.settings
        text = {"type": "text", "analyzer": "english"}
        properties: dict[str, Any] = {f: dict(text) for f in s.text_fields}
        if s.image_field and s.image_field not in properties:  # kept in _source, never searched
            properties[s.image_field] = {"type": "keyword", "index": False, "doc_values": False}
        properties[s.vector_field] = {
            "type": "knn_vector",
            "dimension": dimension,
            "method": {
                "name": "hnsw",
                "engine": "lucene",
                "space_type": s.space_type.value,
                "parameters": {"m": s.hnsw_m, "ef_construction": s.ef_construction},
            },
        }
        return {
            "settings": {
                "index": {"knn": True},
                "number_of_shards": s.shards,
                "number_of_replicas": s.replicas,
            },
            "mappings": {
                "_meta": {"model_version": model_version, "dimension": dimension},
                "properties": properties,
            },
        }

    def _action(self, index: str, doc: dict[str, Any], vector: Sequence[float]) -> dict[str, Any]:
        source = {k: v for k, v in doc.items() if k != "_id"}
        source[self.settings.vector_field] = [float(x) for x in vector]
        return {"_index": index, "_id": doc["_id"], "_source": source}
