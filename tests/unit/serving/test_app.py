from __future__ import annotations

import base64
from collections.abc import Sequence

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.config import RandomizationSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import DocumentIndexError
from serving.index.vector_index import Hit
from serving.state.query_log import InMemoryQueryLog

DOCS = {
    "d1": {"title": "Boundary layer", "text": "boundary layer flow over a flat plate"},
    "d2": {"title": "Shock tubes", "text": "shock waves in a tube"},
    "d3": {"title": "Heat transfer", "text": "heat transfer at hypersonic speed"},
}


class MemoryIndex:
    """Exact cosine search over DOCS with the same encoder; `down = True` simulates an outage."""

    def __init__(self, encoder: HashingEncoder, alias_exists: bool = True) -> None:
        self.encoder = encoder
        self.alias_exists = alias_exists
        self.down = False
        self.vectors = encoder.encode([f"{d['title']} {d['text']}" for d in DOCS.values()])

    def live_index(self) -> str | None:
        if self.down:
            raise DocumentIndexError("connection refused")
        return "docs__hashing__1" if self.alias_exists else None

    def search_knn(self, vector: Sequence[float], k: int, index: str | None = None) -> list[Hit]:
        if self.down:
            raise DocumentIndexError("connection refused")
        scores = self.vectors @ np.asarray(vector)
        order = np.argsort(-scores)[:k]
        ids = list(DOCS)
        return [
            Hit(ids[i], float(scores[i]), "docs__hashing__1", dict(DOCS[ids[i]])) for i in order
        ]


@pytest.fixture()
def encoder() -> HashingEncoder:
    return HashingEncoder(dimension=32, version="v7")


@pytest.fixture()
def parts(encoder: HashingEncoder):  # type: ignore[no-untyped-def]
    settings = ServingSettings(max_batch_inputs=4, max_text_chars=50, max_body_bytes=2048, max_k=5)
    return ModelSlot(encoder), MemoryIndex(encoder), InMemoryQueryLog(), settings


@pytest.fixture()
def client(parts) -> TestClient:  # type: ignore[no-untyped-def]
    return TestClient(create_app(*parts))


def test_embeddings_answer_in_openai_shape(client: TestClient, encoder: HashingEncoder) -> None:
    body = client.post(
        "/v1/embeddings", json={"input": ["shock tube", "wing"], "model": "x"}
    ).json()
    assert body["object"] == "list" and body["model"] == "v7"
    assert [d["index"] for d in body["data"]] == [0, 1]
    np.testing.assert_allclose(body["data"][1]["embedding"], encoder.encode(["wing"])[0], atol=1e-6)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}


def test_base64_embeddings_decode_to_the_float_ones(client: TestClient) -> None:
    plain = client.post("/v1/embeddings", json={"input": "wing"}).json()
    packed = client.post("/v1/embeddings", json={"input": "wing", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), "<f4")
    np.testing.assert_allclose(decoded, plain["data"][0]["embedding"], atol=1e-7)


def test_the_official_openai_client_works_unchanged(client: TestClient, encoder) -> None:
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(api_key="unused", base_url="http://testserver/v1", http_client=client)
    result = api.embeddings.create(model="clicktune", input=["boundary layer", "heat"])
    assert len(result.data) == 2 and result.model == "v7"
    np.testing.assert_allclose(result.data[1].embedding, encoder.encode(["heat"])[0], atol=1e-6)


def test_wrong_dimensions_are_refused(client: TestClient) -> None:
    response = client.post("/v1/embeddings", json={"input": "wing", "dimensions": 16})
    assert response.status_code == 422
    assert "dimensions=16" in response.json()["error"]["message"]
    assert client.post("/v1/embeddings", json={"input": "w", "dimensions": 32}).status_code == 200


def test_embed_answers_in_ml_commons_shape(client: TestClient) -> None:
    body = client.post("/embed", json={"input": ["a", "b c"]}).json()
    assert len(body) == 2 and len(body[0]) == 32


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"input": ["a"] * 5}, 413, "max_batch_inputs=4"),
        (
            {"input": ["ok", "x" * 51]},
            413,
            "input[1] has 51 characters; the limit is max_text_chars=50",
        ),
        ({"input": []}, 422, "input is empty"),
    ],
)
def test_limits_name_the_rule(client: TestClient, payload: dict, status: int, message: str) -> None:
    for path in ("/v1/embeddings", "/embed"):
        response = client.post(path, json=payload)
        assert response.status_code == status
        assert message in response.json()["error"]["message"]


def test_oversized_body_is_refused(client: TestClient) -> None:
    response = client.post(
        "/embed",
        content=b'{"input": "' + b"a" * 3000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413 and "max_body_bytes=2048" in response.text


def test_token_id_inputs_are_refused(client: TestClient) -> None:
    assert client.post("/v1/embeddings", json={"input": [[1, 2, 3]]}).status_code == 422


def test_search_returns_hits_and_logs_the_ubi_query(client: TestClient, parts) -> None:
    query_log = parts[2]
    body = client.post(
        "/v1/search", json={"query": "shock waves", "k": 2, "client_id": "c1", "session_id": "s1"}
    ).json()
    assert body["model_version"] == "v7" and body["arm"] == "production"
    assert [h["id"] for h in body["hits"]][0] == "d2" and body["hits"][0]["title"] == "Shock tubes"
    (record,) = query_log.records
    assert record["query_id"] == body["query_id"]
    assert record["user_query"] == "shock waves" and record["client_id"] == "c1"
    assert record["query_response_hit_ids"] == [h["id"] for h in body["hits"]]
    assert record["application"] == "clicktune" and record["timestamp"].endswith("Z")
    assert record["query_attributes"] == {
        "model_version": "v7",
        "arm": "production",
        "index": "docs__hashing__1",
        "session_id": "s1",
    }


def test_search_is_refused_when_the_query_cannot_be_logged(client: TestClient, parts) -> None:
    parts[2].fail = True
    response = client.post("/v1/search", json={"query": "heat"})
    assert response.status_code == 503 and response.headers["retry-after"] == "5"


def test_search_when_opensearch_is_down_says_so(client: TestClient, parts) -> None:
    parts[1].down = True
    response = client.post("/v1/search", json={"query": "heat"})
    assert response.status_code == 503 and "connection refused" in response.text
    assert parts[2].records == []


def test_search_k_above_the_limit_is_refused(client: TestClient) -> None:
    response = client.post("/v1/search", json={"query": "heat", "k": 6})
    assert response.status_code == 422 and "max_k=5" in response.text


def test_readiness_needs_a_model_and_the_alias(parts, encoder: HashingEncoder) -> None:
    slot, index, query_log, settings = parts
    empty = TestClient(create_app(ModelSlot(), index, query_log, settings))
    assert empty.get("/healthz").status_code == 200
    assert empty.get("/readyz").status_code == 503 and "no model" in empty.get("/readyz").text
    assert empty.post("/embed", json={"input": "a"}).status_code == 503
    no_alias = TestClient(
        create_app(slot, MemoryIndex(encoder, alias_exists=False), query_log, settings)
    )
    assert "alias 'docs' does not exist" in no_alias.get("/readyz").text
    ready = TestClient(create_app(slot, index, query_log, settings)).get("/readyz")
    assert ready.status_code == 200 and ready.json()["index"] == "docs__hashing__1"


def test_a_swapped_model_answers_the_next_request(client: TestClient, parts) -> None:
    parts[0].swap(HashingEncoder(dimension=32, version="v8"))
    assert client.post("/v1/embeddings", json={"input": "a"}).json()["model"] == "v8"


def test_httpx_transport_is_enough_to_call_the_app(parts) -> None:
    transport = httpx.ASGITransport(app=create_app(*parts))
    import asyncio

    async def call() -> int:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            return (await http.get("/healthz")).status_code

    assert asyncio.run(call()) == 200


def test_randomised_searches_log_the_order_they_showed(parts) -> None:  # type: ignore[no-untyped-def]
    slot, index, query_log, settings = parts
    shuffled = settings.model_copy(
        update={"randomization": RandomizationSettings(fraction=1.0, depth=3, seed=3)}
    )
    client = TestClient(create_app(slot, index, query_log, shuffled))
    orders = set()
    for _ in range(12):
        body = client.post("/v1/search", json={"query": "shock waves", "k": 3}).json()
        record = query_log.records[-1]
        assert record["query_response_hit_ids"] == [h["id"] for h in body["hits"]]
        assert record["query_attributes"]["randomized"] == "shuffle_top_3"
        orders.add(tuple(record["query_response_hit_ids"]))
    assert len(orders) > 1 and all(sorted(o) == ["d1", "d2", "d3"] for o in orders)


def test_a_shuffle_deeper_than_k_shows_k_hits_drawn_from_the_top_depth(parts) -> None:  # type: ignore[no-untyped-def]
    slot, index, query_log, settings = parts
    deep = settings.model_copy(
        update={"randomization": RandomizationSettings(fraction=1.0, depth=3, seed=5)}
    )
    client = TestClient(create_app(slot, index, query_log, deep))
    plain = [h.id for h in index.search_knn(slot.current.encode(["shock waves"])[0], 3)]
    shown = set()
    for _ in range(30):
        body = client.post("/v1/search", json={"query": "shock waves", "k": 1}).json()
        assert len(body["hits"]) == 1
        assert query_log.records[-1]["query_response_hit_ids"] == [body["hits"][0]["id"]]
        shown.add(body["hits"][0]["id"])
    assert shown == set(plain)  # ranks 2 and 3 reach the single slot shown
