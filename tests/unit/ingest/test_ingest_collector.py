"""The HTTP collector (serving/api/collector.py) with an in-memory sink: what a browser or a
backend posting UBI records sees."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from ingest.ids import content_id
from serving.api.app import create_app
from serving.api.collector import InMemorySink, collector_router
from serving.config import CollectorSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.state.query_log import InMemoryQueryLog

EVENT = {
    "action_name": "click",
    "query_id": "q1",
    "timestamp": "2025-06-01T12:00:00Z",
    "event_attributes": {"object": {"object_id": "d1"}, "position": {"ordinal": 2}},
}
QUERY = {"query_id": "q1", "timestamp": "2025-06-01T12:00:00Z", "user_query": "drill"}


class NoIndex:
    def live_index(self) -> str | None:
        return None

    def search_knn(self, vector, k, index=None):  # type: ignore[no-untyped-def]
        return []


@pytest.fixture()
def sink() -> InMemorySink:
    return InMemorySink()


@pytest.fixture()
def client(sink: InMemorySink) -> Iterator[TestClient]:
    settings = ServingSettings(cors_origins=["https://shop.example"])
    router = collector_router(
        sink,
        CollectorSettings(max_body_bytes=4096, max_records=10),
        queries_topic="ubi.queries",
        events_topic="ubi.events",
        max_record_bytes=1024,
    )
    app = create_app(ModelSlot(HashingEncoder()), NoIndex(), InMemoryQueryLog(), settings, router)
    with TestClient(app) as test_client:
        yield test_client


def event(i: int) -> dict:
    record = json.loads(json.dumps(EVENT))
    record["event_attributes"]["event_id"] = f"e{i}"
    return record


def test_one_event_is_produced_keyed_by_its_id(client: TestClient, sink: InMemorySink) -> None:
    answer = client.post("/v1/events", json=event(1))
    assert answer.status_code == 202
    assert answer.json() == {"accepted": 1, "ids": ["e1"]}
    [(topic, key, value)] = sink.records
    assert (topic, key) == ("ubi.events", b"e1")
    assert json.loads(value) == event(1)  # the record as sent: the worker normalises it


def test_a_list_is_produced_whole_and_missing_ids_are_derived(
    client: TestClient, sink: InMemorySink
) -> None:
    answer = client.post("/v1/queries", json=[QUERY, {**QUERY, "query_id": "q2"}])
    assert answer.json()["ids"] == ["q1", "q2"]
    no_id = {k: v for k, v in EVENT.items()}
    first = client.post("/v1/events", json=no_id).json()["ids"]
    again = client.post("/v1/events", json=no_id).json()["ids"]
    assert first == again  # a repeated post keeps its id: it overwrites, never doubles
    assert len(first[0]) == len(content_id({}))
    assert [t for t, _, _ in sink.records] == ["ubi.queries"] * 2 + ["ubi.events"] * 2


def test_send_beacon_text_plain_body_is_accepted(client: TestClient, sink: InMemorySink) -> None:
    answer = client.post(
        "/v1/events",
        content=json.dumps(event(3)),
        headers={"Content-Type": "text/plain;charset=UTF-8", "Origin": "https://shop.example"},
    )
    assert answer.status_code == 202
    assert answer.headers["access-control-allow-origin"] == "https://shop.example"
    assert len(sink.records) == 1


def test_cors_preflight_allows_the_configured_origin_only(client: TestClient) -> None:
    def preflight(origin: str) -> int:
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        }
        return client.options("/v1/events", headers=headers).status_code

    assert preflight("https://shop.example") == 200
    assert preflight("https://evil.example") == 400


def test_an_invalid_record_in_a_list_names_its_index_field_and_rule(
    client: TestClient, sink: InMemorySink
) -> None:
    bad = event(2)
    bad["event_attributes"]["position"]["ordinal"] = "3"
    answer = client.post("/v1/events", json=[event(1), bad])
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["records"] == [
        {
            "index": 1,
            "reason": "event_attributes.position.ordinal: '3' is invalid "
            "(input should be a valid integer)",
            "message": "record[1]: event_attributes.position.ordinal: '3' is invalid "
            "(input should be a valid integer)",
        }
    ]
    assert sink.records == []  # nothing of a refused body is produced


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "body is not JSON"),
        (b"[]", "empty list"),
        (json.dumps({**QUERY, "timestamp": "yesterday"}).encode(), "timestamp"),
        (json.dumps({"action_name": "click"}).encode(), "is required but missing"),
        (b'{"action_name": "\\ud800"}', "not UTF-8"),
    ],
)
def test_bad_bodies_answer_422(client: TestClient, body: bytes, fragment: str) -> None:
    path = "/v1/queries" if b"user_query" in body else "/v1/events"
    answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
    assert fragment in answer.json()["error"]["message"]


def test_oversized_bodies_answer_413_with_or_without_content_length(client: TestClient) -> None:
    big = json.dumps([event(i) for i in range(60)]).encode()
    assert len(big) > 4096
    assert client.post("/v1/events", content=big).status_code == 413

    def chunked() -> Iterator[bytes]:  # no Content-Length: the collector counts while reading
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    answer = client.post("/v1/events", content=chunked())
    assert answer.status_code == 413
    assert "max_body_bytes=4096" in answer.json()["error"]["message"]
    too_many = client.post("/v1/queries", json=[QUERY] * 11)
    assert too_many.status_code == 413 and "max_records=10" in too_many.text
    huge_record = {**QUERY, "user_query": "x" * 2000}
    assert client.post("/v1/queries", json=huge_record).status_code == 422


def test_kafka_down_answers_503_with_retry_after(client: TestClient, sink: InMemorySink) -> None:
    sink.fail = True
    answer = client.post("/v1/events", json=event(1))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert "nothing was accepted" in answer.json()["error"]["message"]


def test_other_content_types_are_refused(client: TestClient) -> None:
    answer = client.post("/v1/events", data={"a": "b"})
    assert answer.status_code == 415
