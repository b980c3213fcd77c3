"""Request bodies: 413 over the limit with or without Content-Length, 422 for JSON nested too
deep; and the collector's rate limit, attribute caps and signed query ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.api.app import create_app
from serving.api.auth import Authenticator, Scope
from serving.api.body_limits import json_depth
from serving.api.collector import InMemorySink, collector_router
from serving.api.documents import documents_router
from serving.api.query_ids import QueryIdSigner
from serving.api.rate_limit import RateLimiter
from serving.api.task_api import task_router
from serving.config import CollectorSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.state.query_log import InMemoryQueryLog
from serving.state.tasks import OpenSearchTaskStore
from tests.unit.serving.task_fakes import FakeOpenSearch
from tests.unit.serving.test_app import MemoryIndex

TOKEN = "t-write"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 2048
EVENT = {
    "action_name": "click",
    "query_id": "q1",
    "timestamp": "2025-06-01T12:00:00Z",
    "event_attributes": {"object": {"object_id": "d1"}, "position": {"ordinal": 2}},
}
BODY_ROUTES = [
    "/v1/embeddings",
    "/embed",
    "/v1/search",
    "/v1/documents",
    "/api/v1/fine-tuning/task",
]


def app_with(
    tmp_path: Path, collector: CollectorSettings | None = None, signer: QueryIdSigner | None = None
) -> tuple[TestClient, InMemorySink, InMemoryQueryLog]:
    encoder = HashingEncoder(16, "v1")
    settings = ServingSettings(max_body_bytes=LIMIT, max_json_depth=8)
    sink, query_log = InMemorySink(), InMemoryQueryLog()
    index = MemoryIndex(encoder)
    collect = collector_router(
        sink,
        collector or CollectorSettings(max_body_bytes=1024),
        queries_topic="q",
        events_topic="e",
        max_record_bytes=4096,
        signer=signer,
    )
    routers = [
        documents_router(ModelSlot(encoder), index, settings),  # type: ignore[arg-type]
        task_router(OpenSearchTaskStore(FakeOpenSearch(), "tasks")),  # type: ignore[arg-type]
    ]
    app = create_app(
        ModelSlot(encoder),
        index,
        query_log,
        settings,
        collect,
        routers=routers,
        authenticator=Authenticator({Scope.WRITE: TOKEN}),
        signer=signer,
    )
    return TestClient(app, raise_server_exceptions=False), sink, query_log


def chunks(body: bytes, size: int = 500) -> Iterator[bytes]:  # no Content-Length: chunked
    for start in range(0, len(body), size):
        yield body[start : start + size]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_bodies_over_the_limit_answer_413_chunked_or_not(tmp_path: Path, path: str) -> None:
    client, _, _ = app_with(tmp_path)
    big = json.dumps({"input": ["x" * 100] * 30}).encode()
    assert len(big) > LIMIT
    headers = {**AUTH, "Content-Type": "application/json"}
    declared = client.post(path, content=big, headers=headers)
    assert declared.status_code == 413
    streamed = client.post(path, content=chunks(big), headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert streamed.json()["error"]["message"].endswith(f"exceeds max_body_bytes={LIMIT}")
    assert streamed.json()["error"]["type"] == "request_too_large"


def test_the_collector_keeps_its_own_smaller_limit(tmp_path: Path) -> None:
    client, sink, _ = app_with(tmp_path)
    body = json.dumps([EVENT] * 8).encode()  # over the collector's 1024, under the app's 2048
    answer = client.post("/v1/events", content=chunks(body))
    assert answer.status_code == 413 and "max_body_bytes=1024" in answer.text
    assert sink.records == []


@pytest.mark.parametrize("path", ["/v1/events", "/v1/embeddings", "/v1/documents"])
def test_json_nested_too_deep_answers_422_naming_the_rule(tmp_path: Path, path: str) -> None:
    client, _, _ = app_with(tmp_path)
    deep = b"[" * 9 + b"]" * 9
    answer = client.post(path, content=deep, headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "JSON nested 9 levels deep; the limit is max_json_depth=8"
    )
    as_beacon = client.post(path, content=b"[" * 1000, headers={"Content-Type": "text/plain"})
    assert as_beacon.status_code == 422  # was a RecursionError: 500


def test_brackets_inside_strings_do_not_count() -> None:
    assert json_depth(json.dumps({"input": ["[[[[{{{{" * 50, 'a "quoted" [ ]']}).encode()) == 2
    assert json_depth(b'{"a": [{"b": [1, 2]}, {"c": "\\"[[["}]}') == 4
    assert json_depth(b"[]") == 1 and json_depth(b'"plain"') == 0


def test_a_client_over_its_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    settings = CollectorSettings(max_body_bytes=1024, rate_per_s=0.5, burst=3)
    client, sink, _ = app_with(tmp_path, settings)
    answers = [client.post("/v1/events", json=EVENT) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[3].headers["retry-after"] == "2"
    assert "rate_per_s=0.5 (burst=3)" in answers[3].json()["error"]["message"]
    assert len(sink.records) == 3


def test_the_bucket_refills_at_its_rate_and_forgets_the_oldest_client() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2, burst=1, max_clients=2, clock=lambda: now[0])
    assert limiter.take("a") == 0 and limiter.take("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.take("a") == 0
    limiter.take("b"), limiter.take("c")  # "a" is dropped: it starts again full
    assert limiter.take("a") == 0


@pytest.mark.parametrize(
    ("attributes", "rule"),
    [
        ({f"k{i}": i for i in range(5)}, "event_attributes has 5 keys; the limit is "),
        ({"note": "x" * 200}, "event_attributes.note is 202 bytes as JSON; the limit is "),
    ],
)
def test_attribute_caps_answer_422_naming_the_cap(tmp_path: Path, attributes, rule: str) -> None:
    caps = CollectorSettings(max_attribute_keys=4, max_attribute_value_bytes=100)
    client, sink, _ = app_with(tmp_path, caps)
    answer = client.post("/v1/events", json=[EVENT, {**EVENT, "event_attributes": attributes}])
    assert answer.status_code == 422
    message = answer.json()["error"]["message"]
    assert "record[1]: " + rule in message
    assert "max_attribute_keys=4" in message or "max_attribute_value_bytes=100" in message
    assert sink.records == []


def test_search_issues_signed_query_ids_and_the_collector_marks_forged_ones(
    tmp_path: Path,
) -> None:
    signer = QueryIdSigner(b"k" * 32)
    client, sink, query_log = app_with(tmp_path, signer=signer)
    query_id = client.post("/v1/search", json={"query": "shock"}).json()["query_id"]
    assert signer.verify(query_id) and query_log.records[0]["query_id"] == query_id
    forged = query_id[:-1] + ("A" if query_id[-1] != "A" else "B")
    for sent in (query_id, forged, "made-up"):
        assert client.post("/v1/events", json={**EVENT, "query_id": sent}).status_code == 202
    no_attributes = {k: v for k, v in EVENT.items() if k != "event_attributes"}
    assert client.post("/v1/events", json=no_attributes).status_code == 202
    stored = [json.loads(value)["event_attributes"] for _, _, value in sink.records]
    assert [a["query_id_verified"] for a in stored] == [True, False, False, False]
    assert stored[0]["position"] == {"ordinal": 2}  # the record is otherwise as sent


def test_without_a_key_records_are_not_marked(tmp_path: Path) -> None:
    client, sink, _ = app_with(tmp_path)
    assert client.post("/v1/events", json=EVENT).status_code == 202
    assert "query_id_verified" not in json.loads(sink.records[0][2])["event_attributes"]


@pytest.mark.parametrize("batch_id", ["../../etc/passwd", "batch-1/../x", "b", "batch-"])
def test_a_batch_id_that_is_not_a_batch_name_is_refused(tmp_path: Path, batch_id: str) -> None:
    client, _, _ = app_with(tmp_path)
    body = {"fine_tuning_method": "weighted-infonce", "batch_id": batch_id}
    answer = client.post("/api/v1/fine-tuning/task", json=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert "batch_id" in answer.text
    good = {**body, "batch_id": "batch-0003"}
    assert client.post("/api/v1/fine-tuning/task", json=good, headers=AUTH).status_code == 201


def test_a_task_id_that_is_not_an_id_is_refused(tmp_path: Path) -> None:
    client, _, _ = app_with(tmp_path)
    answer = client.get("/api/v1/fine-tuning/task/a.b", headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert client.get("/api/v1/fine-tuning/task/abc123", headers=AUTH).status_code == 404
