"""`/v1/search` mode=hybrid against the real OpenSearch: BM25 + k-NN through neural-search's
hybrid query and a normalisation search pipeline finds a lexical match that k-NN misses."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.config import HybridSettings, IndexSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.index.hybrid import HybridSearch
from serving.index.indexer import index_corpus
from serving.index.vector_index import DocumentIndex
from serving.state.query_log import InMemoryQueryLog

pytestmark = pytest.mark.integration

NEIGHBOURS = [f"boundary layer {word}" for word in ["flow", "drag", "heat", "wing", "shock"]]


class SteeredEncoder(HashingEncoder):
    """Embeds the query 'zeppelin' like 'boundary layer flow': k-NN looks elsewhere."""

    def encode(self, texts: list[str]) -> np.ndarray:
        return super().encode(["boundary layer flow" if t == "zeppelin" else t for t in texts])


def test_hybrid_finds_the_lexical_match_that_knn_misses(opensearch, unique: str) -> None:
    name = f"t-hybrid-{unique}"
    index_settings = IndexSettings(alias=name, prefix=name, text_fields=["text"])
    hybrid_settings = HybridSettings(pipeline=name, lexical_weight=0.4)
    settings = ServingSettings(index=index_settings, hybrid=hybrid_settings)
    encoder = SteeredEncoder(dimension=64, version="steered")
    doc_index = DocumentIndex(opensearch, index_settings)
    docs = [{"_id": f"n{i}", "text": text} for i, text in enumerate(NEIGHBOURS)]
    docs.append({"_id": "target", "text": "the zeppelin airship"})
    try:
        index_corpus(docs, encoder, doc_index, progress=False)
        hybrid = HybridSearch(opensearch, index_settings, hybrid_settings)
        app = create_app(ModelSlot(encoder), doc_index, InMemoryQueryLog(), settings, hybrid=hybrid)
        client = TestClient(app)

        knn = client.post("/v1/search", json={"query": "zeppelin", "k": 3})
        assert knn.status_code == 200, knn.text
        assert "target" not in [h["id"] for h in knn.json()["hits"]]
        found = client.post("/v1/search", json={"query": "zeppelin", "k": 3, "mode": "hybrid"})
        assert found.status_code == 200, found.text
        assert "target" in [h["id"] for h in found.json()["hits"]]
        assert found.json()["hits"][0]["id"] == "n0"  # k-NN's best still leads (weight 0.6)

        pipeline = opensearch.transport.perform_request("GET", f"/_search/pipeline/{name}")
        combination = pipeline[name]["phase_results_processors"][0]["normalization-processor"]
        assert combination["combination"]["parameters"]["weights"] == [0.4, 0.6]
    finally:
        opensearch.indices.delete(index=f"{name}__*", params={"expand_wildcards": "all"})
        opensearch.transport.perform_request("DELETE", f"/_search/pipeline/{name}")
