"""The UBI collector: `POST /v1/queries` and `POST /v1/events` validate records and produce them.

A body is one UBI record or a JSON list of them, sent as `application/json` or as `text/plain`
(what `navigator.sendBeacon` sends for a string). Every record is checked with the ingest
worker's own validator, so what the collector accepts the worker stores. Answers:

- 202 `{"accepted": n, "ids": [...]}` once Kafka acknowledged every record (acks=all);
- 422 naming the field and the rule, with the index of each bad record when the body is a list
  (nothing of that body is produced);
- 413 for a body over `max_body_bytes` (counted while reading, so a missing Content-Length does
  not get past it) or with more than `max_records` records;
- 503 with Retry-After when Kafka does not acknowledge in time. The client posts again; a record
  keeps its id (sent or derived from its content), so a repeat overwrites instead of doubling.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ingest.validate import RecordKind, Rejection, validate_record
from serving.config import CollectorSettings
from serving.errors import QueryLogError

__all__ = ["InMemorySink", "KafkaRecordSink", "RecordSink", "collector_router"]

ACCEPTED_TYPES = ("application/json", "text/plain", "")
MAX_LISTED_ERRORS = 20


class RecordSink(Protocol):
    """Where accepted records go; both methods return only once every record is durable."""

    def send(self, topic: str, key: bytes, value: bytes) -> None: ...

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


class KafkaRecordSink:
    """Produces with a kafka-python producer (build it with acks="all") and waits for the acks.

    Raises `QueryLogError` when Kafka does not acknowledge within `timeout_s`; build the producer
    with `max_block_ms` no longer than that, or `send` itself may block on missing metadata.
    """

    def __init__(self, producer: Any, timeout_s: float = 5.0) -> None:
        self._producer = producer
        self._timeout_s = timeout_s

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.send_many(topic, [(key, value)])

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        try:
            futures = [self._producer.send(topic, key=k, value=v) for k, v in records]
            for future in futures:
                future.get(timeout=self._timeout_s)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise QueryLogError(
                f"{len(records)} records not acknowledged by topic {topic!r} "
                f"within {self._timeout_s} s: {exc!r}"
            ) from exc


class InMemorySink:
    """Keeps (topic, key, value) in `records`; `fail = True` makes sends raise (the 503 path)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes]] = []
        self.fail = False
        self._lock = threading.Lock()

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.send_many(topic, [(key, value)])

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self.fail:
            raise QueryLogError(f"in-memory sink set to fail ({len(records)} records to {topic})")
        with self._lock:
            self.records += [(topic, key, value) for key, value in records]


class _Refusal(Exception):
    """A request the collector answers with an error status instead of producing."""

    def __init__(
        self, status: int, message: str, kind: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.details = status, message, kind, details


def collector_router(
    sink: RecordSink,
    settings: CollectorSettings,
    *,
    queries_topic: str,
    events_topic: str,
    max_record_bytes: int,
) -> APIRouter:
    """The two collector routes; `max_record_bytes` should be the ingest worker's limit."""
    router = APIRouter(tags=["collector"])
    retry_after = {"Retry-After": str(settings.retry_after_s)}

    async def collect(request: Request, kind: RecordKind, topic: str) -> JSONResponse:
        try:
            body = await _read_body(request, settings.max_body_bytes)
            records = _records(body, kind, settings.max_records, max_record_bytes)
        except _Refusal as refusal:
            return _error(refusal)
        try:
            await run_in_threadpool(sink.send_many, topic, [(k.encode(), v) for k, v in records])
        except QueryLogError as exc:
            message = f"Kafka did not take the records; nothing was accepted: {exc}"
            return _error(_Refusal(503, message, "service_unavailable"), retry_after)
        return JSONResponse({"accepted": len(records), "ids": [k for k, _ in records]}, 202)

    @router.post("/v1/queries", status_code=202)
    async def post_queries(request: Request) -> JSONResponse:
        """Collect UBI query records (one object or a list)."""
        return await collect(request, RecordKind.QUERY, queries_topic)

    @router.post("/v1/events", status_code=202)
    async def post_events(request: Request) -> JSONResponse:
        """Collect UBI event records (one object or a list); sendBeacon bodies welcome."""
        return await collect(request, RecordKind.EVENT, events_topic)

    return router


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise _Refusal(
            415,
            f"content type {media_type!r} is not accepted: send application/json or text/plain",
            "unsupported_media_type",
        )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(int(length), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit, partial=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int, partial: bool = False) -> _Refusal:
    amount = f"over {size}" if partial else f"{size}"
    message = f"body of {amount} bytes exceeds max_body_bytes={limit}"
    return _Refusal(413, message, "request_too_large")


def _records(
    body: bytes, kind: RecordKind, max_records: int, max_record_bytes: int
) -> list[tuple[str, bytes]]:
    """(record id, record bytes) for every record of the body; 422 if any is invalid."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeError, ValueError) as exc:
        raise _Refusal(422, f"body is not JSON: {exc}", "invalid_request_error") from exc
    items = data if isinstance(data, list) else [data]
    if not items:
        raise _Refusal(
            422, "body is an empty list: send at least one record", "invalid_request_error"
        )
    if len(items) > max_records:
        message = f"body has {len(items)} records; the limit is max_records={max_records}"
        raise _Refusal(413, message, "request_too_large")
    accepted: list[tuple[str, bytes]] = []
    errors: list[dict[str, Any]] = []
    for position, item in enumerate(items):
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate: refused as not UTF-8
        record = validate_record(raw, kind, max_record_bytes, int(time.time() * 1000))
        if isinstance(record, Rejection):
            where = f"record[{position}]: " if isinstance(data, list) else ""
            errors.append(
                {"index": position, "reason": record.reason, "message": where + record.reason}
            )
        else:
            accepted.append((record.record_id, raw))
    if errors:
        shown = "; ".join(str(e["message"]) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        message = f"{len(errors)} invalid {kind.value} record(s), none accepted: {shown}{more}"
        raise _Refusal(422, message, "invalid_request_error", errors[:MAX_LISTED_ERRORS])
    return accepted


def _error(refusal: _Refusal, headers: dict[str, str] | None = None) -> JSONResponse:
    error: dict[str, Any] = {
        "message": refusal.message,
        "type": refusal.kind,
        "code": refusal.status,
    }
    if refusal.details is not None:
        error["records"] = refusal.details
    return JSONResponse({"error": error}, status_code=refusal.status, headers=headers)
