"""Hybrid search: BM25 and k-NN in one neural-search `hybrid` query, scores combined by a
normalisation search pipeline (min_max, arithmetic_mean with the configured weights).

The search pipeline is created idempotently (a PUT of the same body) on first use, so a fresh
cluster needs no setup step and a changed weight takes effect on the next start.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import OpenSearchException

from serving.config import HybridSettings, IndexSettings
from serving.errors import DocumentIndexError
from serving.index.vector_index import Hit

__all__ = ["HybridSearch", "normalization_pipeline"]


def normalization_pipeline(settings: HybridSettings) -> dict[str, Any]:
    """The search pipeline body: min_max normalisation, weighted arithmetic mean (BM25, k-NN)."""
    weights = [settings.lexical_weight, round(1.0 - settings.lexical_weight, 6)]
    return {
        "description": "clicktune hybrid search: BM25 + k-NN",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": weights},
                    },
                }
            }
        ],
    }


class HybridSearch:
    """BM25 over the text fields + k-NN over the vector field, in the index behind the alias."""

    def __init__(self, client: OpenSearch, index: IndexSettings, settings: HybridSettings) -> None:
        self.client = client
        self.index = index
        self.settings = settings
        self._ready = False
        self._lock = threading.Lock()

    def ensure_pipeline(self) -> None:
        """Create or update the normalisation search pipeline (once per process)."""
        with self._lock:
            if self._ready:
                return
            name = self.settings.pipeline
            try:
                self.client.transport.perform_request(
                    "PUT", f"/_search/pipeline/{name}", body=normalization_pipeline(self.settings)
                )
            except OpenSearchException as exc:
                raise DocumentIndexError(f"cannot create search pipeline {name!r}: {exc}") from exc
            self._ready = True

    def search(
        self, query: str, vector: Sequence[float], k: int, index: str | None = None
    ) -> list[Hit]:
        """The `k` best documents for `query` by combined BM25 and k-NN score, best first."""
        self.ensure_pipeline()
        target = index or self.index.alias
        knn = {"vector": [float(x) for x in vector], "k": k}
        body = {
            "size": k,
            "_source": {"excludes": [self.index.vector_field]},
            "query": {
                "hybrid": {
                    "queries": [
                        {"multi_match": {"query": query, "fields": self.index.text_fields}},
                        {"knn": {self.index.vector_field: knn}},
                    ]
                }
            },
        }
        try:
            response = self.client.search(
                index=target, body=body, params={"search_pipeline": self.settings.pipeline}
            )
        except OpenSearchException as exc:
            raise DocumentIndexError(f"hybrid search in {target!r} failed: {exc}") from exc
        return [
            Hit(id=h["_id"], score=float(h["_score"]), index=h["_index"], source=h["_source"])
            for h in response["hits"]["hits"]
        ]
