"""A query model deployed without a reindex, against a real `clicktune serve`, OpenSearch and
Kafka: a tiny BERT registered as `v1` builds the index, a query adapter trained over it is
exported as `q1` ("query model q1 over document model v1") and promoted through the admin API
under concurrent /v1/search load. No search fails, the document index keeps its name, alias,
count and vectors, searches then embed with q1, and documents still embed with v1."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("sentence_transformers")

from sentence_transformers import SentenceTransformer  # noqa: E402

from serving.config import EncoderSettings, IndexSettings  # noqa: E402
from serving.encoders.model_loader import load_model_dir  # noqa: E402
from serving.index.corpus import document_text  # noqa: E402
from serving.index.indexer import index_corpus  # noqa: E402
from serving.index.vector_index import DocumentIndex  # noqa: E402
from serving.models.registry import LocalRegistry  # noqa: E402
from tests.integration.serve_ready import running_serve, serve_env  # noqa: E402
from tests.unit.tuner.test_tuner_query_adapter import HELD_OUT, SETTINGS  # noqa: E402
from tests.unit.tuner.tiny_encoder import build_tiny_encoder  # noqa: E402
from tests.unit.tuner.unseen_pairs import DOCS, PAIRS, QUERIES  # noqa: E402
from tuner.export import export_text_model  # noqa: E402
from tuner.export_query import export_query_model  # noqa: E402
from tuner.query_adapter import fine_tune_query_adapter  # noqa: E402

TOKEN = "t-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_LENGTH = 32
CORPUS = [{"_id": doc_id, "title": "", "text": text} for doc_id, text in DOCS.items()]


@dataclass
class World:
    url: str
    name: str
    registry: LocalRegistry
    docs: DocumentIndex
    http: httpx.Client

    def promote(self, version: str) -> httpx.Response:
        return self.http.post("/admin/models/promote", json={"version": version}, headers=AUTH)

    def index_state(self) -> dict[str, Any]:
        """Every index of the run with its aliases, the live one's count and stored vectors."""
        client, live = self.docs.client, self.docs.live_index()
        assert live is not None
        body = {"size": 100, "_source": ["embedding"], "query": {"match_all": {}}}
        hits = client.search(index=live, body=body)["hits"]["hits"]
        return {
            "aliases": client.indices.get_alias(index=f"{self.name}__*"),
            "live": live,
            "count": self.docs.refresh(live),
            "vectors": {h["_id"]: h["_source"]["embedding"] for h in hits},
        }

    def embed(self, texts: list[str], input_type: str) -> np.ndarray:
        answer = self.http.post("/embed", json={"input": texts, "input_type": input_type})
        assert answer.status_code == 200, answer.text
        return np.asarray(answer.json())


def _models(home: Path) -> LocalRegistry:
    """v1: a tiny random BERT (the document model); q1: a query adapter trained over it."""
    texts = [*DOCS.values(), *QUERIES, *HELD_OUT]
    encoder = SentenceTransformer(str(build_tiny_encoder(home / "tiny", texts)), device="cpu")
    registry = LocalRegistry(home / "models")
    export_text_model(
        encoder,
        home / "src" / "v1",
        version="v1",
        parent=None,
        base_model="tiny",
        max_length=MAX_LENGTH,
        held_out_texts=HELD_OUT,
    )
    registry.add(home / "src" / "v1", "v1")
    registry.set_alias("production", "v1")
    settings = SETTINGS.model_copy(update={"max_steps": 60})
    adapter = fine_tune_query_adapter(encoder, PAIRS, DOCS, settings, progress=False).adapter
    export_query_model(
        encoder,
        adapter,
        home / "src" / "q1",
        version="q1",
        document_model="v1",
        parent="v1",
        base_model="tiny",
        max_length=MAX_LENGTH,
        held_out_texts=HELD_OUT + QUERIES,
    )
    registry.add(home / "src" / "q1", "q1")
    return registry


@pytest.fixture(scope="module")
def world(services, opensearch, tmp_path_factory) -> Iterator[World]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("query-model")
    name = f"t-qmodel-{os.getpid()}-{int(time.time())}"
    registry = _models(home)
    docs = DocumentIndex(opensearch, IndexSettings(alias=name, prefix=name))
    v1 = load_model_dir(registry.get("v1").path, EncoderSettings())
    index_corpus(CORPUS, v1, docs, progress=False)
    env = serve_env(
        home,
        name,
        services,
        CLICKTUNE_SERVING__HOT_SWAP__POLL_S="0",
        CLICKTUNE_ADMIN__TOKEN=TOKEN,
    )
    try:
        with running_serve(home, env) as url, httpx.Client(base_url=url, timeout=60) as http:
            yield World(url, name, registry, docs, http)
    finally:
        opensearch.indices.delete(index=f"{name}*", params={"expand_wildcards": "all"})


def _search_load(world: World, stop: threading.Event, failures: list, seen: list) -> None:
    """Search in a loop until `stop`; record every failure and the model each answer names."""
    with httpx.Client(base_url=world.url, timeout=30) as http:
        i = 0
        while not stop.is_set():
            query = QUERIES[i % len(QUERIES)]
            i += 1
            try:
                answer = http.post("/v1/search", json={"query": query, "k": 3})
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if answer.status_code != 200 or len(answer.json()["hits"]) != 3:
                failures.append(f"{answer.status_code} {answer.text}")
                continue
            seen.append(answer.json()["model_version"])


def test_a_query_model_goes_live_under_load_without_touching_the_index(world: World) -> None:
    before = world.index_state()
    base_queries = world.embed(QUERIES, "query")
    failures: list[str] = []
    seen: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_search_load, args=(world, stop, failures, seen)) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        started = time.perf_counter()
        answer = world.promote("q1")
        moved_s = f"promote answered in {time.perf_counter() - started:.2f} s"
        promoted_at = len(seen)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    print(
        f"\nquery-only promote under load: {len(seen)} searches, {promoted_at} before it, {moved_s}"
    )
    assert answer.status_code == 200, answer.text
    moved = answer.json()
    assert (moved["version"], moved["previous"], moved["reindexed"]) == ("q1", "v1", False)
    assert moved["index"] == moved["previous_index"] == before["live"]
    assert failures == []
    assert "v1" in seen[:promoted_at] and seen[-1] == "q1" and len(seen) > promoted_at
    assert world.index_state() == before  # same indexes, aliases, count and vectors
    assert world.registry.aliases()["production"] == "q1"

    # Searches embed with q1: its query vectors differ from v1's, and the hits are the index's
    # nearest documents to them.
    queries = world.embed(QUERIES, "query")
    assert np.sum(queries * base_queries, axis=1).min() < 0.99
    for query, vector in zip(QUERIES[:3], queries, strict=False):
        found = world.http.post("/v1/search", json={"query": query, "k": 3}).json()
        expected = world.docs.search_knn(vector, 3)
        assert found["model_version"] == "q1"
        assert [h["id"] for h in found["hits"]] == [h.id for h in expected]
        assert [h["score"] for h in found["hits"]] == pytest.approx([h.score for h in expected])

    # Documents still embed with v1: what the index holds, not what q1 would make of them.
    texts = [document_text(doc, ["title", "text"]) for doc in CORPUS]
    stored = np.asarray([before["vectors"][doc["_id"]] for doc in CORPUS])
    np.testing.assert_allclose(world.embed(texts, "document"), stored, atol=1e-5)
    assert not np.allclose(world.embed(texts, "query"), stored, atol=1e-3)
    embeddings = world.http.post("/v1/embeddings", json={"input": texts[:1]}).json()
    assert embeddings["model"] == "v1"  # no input_type: the document side


def test_opensearch_ingests_with_the_document_side_and_searches_with_the_query_side(
    world: World, opensearch
) -> None:  # type: ignore[no-untyped-def]
    """The README's two commands (`clicktune opensearch connect`, then with `--input-type
    query`) against the real ml-commons: the pipeline stores v1's vectors, `neural` queries rank
    by q1's query vectors."""
    from serving.config import MlCommonsSettings
    from serving.encoders.input_type import InputType
    from serving.index.ml_commons import ML, _delete_model, _request, connect, model_name

    assert world.promote("q1").status_code == 200
    index = f"{world.name}-neural"
    settings = MlCommonsSettings(name=world.name, pipeline=f"{world.name}-embed")
    made = {}
    try:
        for side in InputType:
            made[side] = connect(opensearch, world.url, 32, settings, side)
        assert made[InputType.QUERY].pipeline is None
        method = {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"}
        vector = {"type": "knn_vector", "dimension": 32, "method": method}
        opensearch.indices.create(
            index=index,
            body={
                "settings": {
                    "index.knn": True,
                    "number_of_replicas": 0,
                    "default_pipeline": settings.pipeline,
                },
                "mappings": {"properties": {"text": {"type": "text"}, "embedding": vector}},
            },
        )
        for doc_id, text in DOCS.items():
            opensearch.index(index=index, id=doc_id, body={"text": text}, refresh=True)
        texts = list(DOCS.values())
        stored = np.asarray(
            [opensearch.get(index=index, id=d)["_source"]["embedding"] for d in DOCS]
        )
        np.testing.assert_allclose(stored, world.embed(texts, "document"), atol=1e-5)
        assert not np.allclose(stored, world.embed(texts, "query"), atol=1e-3)

        query_model = made[InputType.QUERY].model_id
        for query in QUERIES[:3]:
            neural = {"embedding": {"query_text": query, "model_id": query_model, "k": 8}}
            hits = opensearch.search(index=index, body={"query": {"neural": neural}, "size": 3})
            scores = stored @ world.embed([query], "query")[0]
            expected = [list(DOCS)[i] for i in np.argsort(-scores)[:3]]
            assert [h["_id"] for h in hits["hits"]["hits"]] == expected
        again = connect(opensearch, world.url, 32, settings, InputType.QUERY)
        assert again.model_id == query_model  # re-running reuses the side's model
        assert model_name(settings, InputType.QUERY) == f"{world.name}-query"
    finally:
        opensearch.indices.delete(index=index, ignore_unavailable=True)
        _request(opensearch, "DELETE", f"/_ingest/pipeline/{settings.pipeline}", missing={})
        for connection in made.values():
            _delete_model(opensearch, connection.model_id)
            _request(opensearch, "DELETE", f"{ML}/connectors/{connection.connector_id}", missing={})


def test_rollback_from_the_query_model_keeps_the_index(world: World) -> None:
    before = world.index_state()
    back = world.http.post("/admin/models/rollback", headers=AUTH)
    assert back.status_code == 200, back.text
    assert (back.json()["version"], back.json()["index"]) == ("v1", before["live"])
    assert world.index_state() == before
    search = world.http.post("/v1/search", json={"query": QUERIES[0]}).json()
    assert search["model_version"] == "v1"
