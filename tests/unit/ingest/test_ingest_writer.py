"""Bulk writes: retry what OpenSearch may accept later, dead-letter what it never will."""

from __future__ import annotations

import pytest
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from ingest.errors import SetupError, StoreUnavailable
from ingest.writer import BulkWriter, Document, backoff_s
from tests.unit.ingest.ingest_fakes import FakeBulkClient


def docs(n: int) -> list[Document]:
    return [Document("ubi_events", f"e{i}", {"n": i}, origin=i) for i in range(n)]


def writer(client: FakeBulkClient, sleeps: list[float], **kwargs: object) -> BulkWriter:
    options = {"max_attempts": 4, "initial_backoff_s": 0.5, "max_backoff_s": 1.5, **kwargs}
    return BulkWriter(client, sleep=sleeps.append, **options)  # type: ignore[arg-type]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_s(a, 0.5, 3.0) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_rejected_items_are_retried_alone_then_succeed() -> None:
    client = FakeBulkClient([[201, 429, 503], [201, 429], [201]])
    sleeps: list[float] = []
    result = writer(client, sleeps).write(docs(3))
    assert result.written == 3 and result.dead_letters == [] and result.retries == 2
    assert sleeps == [0.5, 1.0]
    assert [len(call) // 2 for call in client.calls] == [3, 2, 1]
    assert set(client.stored) == {("ubi_events", "e0"), ("ubi_events", "e1"), ("ubi_events", "e2")}


def test_permanent_item_error_becomes_a_dead_letter_with_the_reason() -> None:
    client = FakeBulkClient([[201, 400, 201]])
    result = writer(client, []).write(docs(3))
    assert result.written == 2
    [letter] = result.dead_letters
    assert letter.document.doc_id == "e1" and letter.document.origin == 1
    assert letter.reason.startswith("opensearch 400 mapper_parsing_exception")


def test_items_still_refused_after_max_attempts_raise_retryable() -> None:
    client = FakeBulkClient([[429], [429], [429], [429]])
    sleeps: list[float] = []
    with pytest.raises(StoreUnavailable, match="1 records still refused after 4 attempts"):
        writer(client, sleeps).write(docs(1))
    assert sleeps == [0.5, 1.0, 1.5]


@pytest.mark.parametrize(
    "error",
    [OSConnectionError("N/A", "connection refused", None), TransportError(503, "unavailable")],
)
def test_whole_request_failure_is_retryable(error: Exception) -> None:
    with pytest.raises(StoreUnavailable, match="bulk write of 2 records"):
        writer(FakeBulkClient([error]), []).write(docs(2))


def test_whole_request_refusal_is_not_retried() -> None:
    with pytest.raises(SetupError, match="status 401"):
        writer(FakeBulkClient([TransportError(401, "unauthorized")]), []).write(docs(2))


def test_large_batches_are_split_into_requests_under_max_bulk_bytes() -> None:
    big = [Document("i", f"d{i}", {"text": "x" * 600}) for i in range(10)]
    client = FakeBulkClient()
    result = writer(client, [], max_bulk_bytes=2048).write(big)
    assert result.written == 10
    # About 680 bytes per document: three fit under 2,048 bytes, so 3 + 3 + 3 + 1.
    assert [len(call) // 2 for call in client.calls] == [3, 3, 3, 1]
    assert len(client.stored) == 10
