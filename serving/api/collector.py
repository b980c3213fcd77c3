"""The UBI collector: `POST /v1/queries` and `POST /v1/events` validate records and produce them.

A body is one UBI record or a JSON list of them, sent as `application/json` or as `text/plain`
(what `navigator.sendBeacon` sends for a string). Every record is checked with the ingest
worker's own validator, so what the collector accepts the worker stores. Answers:

- 202 `{"accepted": n, "ids": [...]}` once Kafka acknowledged every record (acks=all), or the
  spool holds them;
- 422 naming the field and the rule, with the index of each bad record when the body is a list
  (nothing of that body is produced);
- 422 too for a record whose `event_attributes` / `query_attributes` has more than
  `max_attribute_keys` keys or a value over `max_attribute_value_bytes`, and for JSON nested
  deeper than `serving.max_json_depth` (serving/api/body_limits.py);
- 413 for a body over `max_body_bytes` (counted while reading by the app's `BodyLimits`, so a
  missing Content-Length does not get past it) or with more than `max_records` records;
- 429 with Retry-After for a client address over `rate_per_s` (bursts of `burst`);
- 503 with Retry-After when Kafka does not acknowledge in time and the sink cannot keep the
  records either (`clicktune serve` puts a `SpoolingSink` in front of Kafka,
  serving/state/spool.py: the records wait in the local spool while Kafka is down, 503 only once
  the spool is full). The client posts again; a record keeps its id (sent or derived from its
  content), so a repeat overwrites instead of doubling.

The routes are public: browsers post to them. With a `QueryIdSigner` (a query signing key), each
record with a `query_id` gets `query_id_verified` in its attributes: true when `/v1/search` issued
that id, false for one it did not (forged or made up by the client); records are never dropped
for it.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ingest.validate import RecordKind, Rejection, validate_record
from serving.api.api_errors import error_response
from serving.api.auth import Scope, requires
from serving.api.body_limits import body_limit
from serving.api.query_ids import QueryIdSigner
from serving.api.rate_limit import RateLimiter
from serving.config import CollectorSettings
from serving.errors import QueryLogError

__all__ = ["InMemorySink", "KafkaDelivery", "KafkaRecordSink", "RecordSink", "collector_router"]

ACCEPTED_TYPES = ("application/json", "text/plain", "")
MAX_LISTED_ERRORS = 20
ATTRIBUTES = {RecordKind.QUERY: "query_attributes", RecordKind.EVENT: "event_attributes"}
VERIFIED = "query_id_verified"


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
        self.submit(topic, records).wait()

    def submit(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> KafkaDelivery:
        """Hand `records` to the producer without waiting; `QueryLogError` if it takes none."""
        try:
            futures = [self._producer.send(topic, key=k, value=v) for k, v in records]
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise _not_acknowledged(len(records), topic, self._timeout_s, exc) from exc
        return KafkaDelivery(futures, topic, self._timeout_s)


class KafkaDelivery:
    """Records the producer holds: `wait` for their acks, or look later with `settled`/`failed`.

    A record whose ack does not come within `timeout_s` stays in the producer, which keeps
    retrying it (kafka-python: until `delivery_timeout_ms`) and may still deliver it. Whoever
    would send it again (the spool replayer) waits until it is `settled` instead, so a broker
    outage does not pile up copies of the same records in the producer.
    """

    def __init__(self, futures: Sequence[Any], topic: str, timeout_s: float) -> None:
        self._futures, self._topic, self._timeout_s = list(futures), topic, timeout_s

    def wait(self) -> None:
        """Return once Kafka acknowledged every record; `QueryLogError` after `timeout_s`."""
        try:
            for future in self._futures:
                future.get(timeout=self._timeout_s)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise _not_acknowledged(len(self._futures), self._topic, self._timeout_s, exc) from exc

    def settled(self) -> bool:
        """True once the producer is done with every record (acknowledged or given up)."""
        return all(future.is_done for future in self._futures)

    def failed(self) -> bool:
        """True when the producer gave up on some record (it was not delivered)."""
        return any(future.failed() for future in self._futures)


def _not_acknowledged(count: int, topic: str, timeout_s: float, exc: Exception) -> QueryLogError:
    return QueryLogError(
        f"{count} records not acknowledged by topic {topic!r} within {timeout_s} s: {exc!r}"
    )


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

    def submit(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> _Delivered:
        """Keep `records` at once (or raise, as `send_many`): the delivery is already settled."""
        self.send_many(topic, records)
        return _Delivered()


class _Delivered:
    """A delivery that settled on submit: nothing to wait for, nothing failed."""

    def wait(self) -> None:
        return None

    def settled(self) -> bool:
        return True

    def failed(self) -> bool:
        return False


class _Refusal(Exception):
    """A request the collector answers with an error status instead of producing."""

    def __init__(
        self, status: int, message: str, kind: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.details = status, message, kind, details
        self.headers: dict[str, str] = {}


def collector_router(
    sink: RecordSink,
    settings: CollectorSettings,
    *,
    queries_topic: str,
    events_topic: str,
    max_record_bytes: int,
    signer: QueryIdSigner | None = None,
) -> APIRouter:
    """The two collector routes; `max_record_bytes` should be the ingest worker's limit."""
    router = APIRouter(tags=["collector"], dependencies=[requires(Scope.PUBLIC)])
    retry_after = {"Retry-After": str(settings.retry_after_s)}
    limiter = RateLimiter(settings.rate_per_s, settings.burst) if settings.rate_per_s else None
    checks = _RecordChecks(settings, max_record_bytes, signer)

    async def collect(request: Request, kind: RecordKind, topic: str) -> JSONResponse:
        try:
            _check_rate(limiter, request)
            _check_media_type(request)
            records = checks.records(await request.body(), kind)
        except _Refusal as refusal:
            return _error(refusal)
        try:
            await run_in_threadpool(sink.send_many, topic, [(k.encode(), v) for k, v in records])
        except QueryLogError as exc:
            message = f"Kafka did not take the records; nothing was accepted: {exc}"
            return _error(_Refusal(503, message, "service_unavailable"), retry_after)
        return JSONResponse({"accepted": len(records), "ids": [k for k, _ in records]}, 202)

    limit = body_limit(settings.max_body_bytes)

    @router.post("/v1/queries", status_code=202, openapi_extra=limit)
    async def post_queries(request: Request) -> JSONResponse:
        """Collect UBI query records (one object or a list)."""
        return await collect(request, RecordKind.QUERY, queries_topic)

    @router.post("/v1/events", status_code=202, openapi_extra=limit)
    async def post_events(request: Request) -> JSONResponse:
        """Collect UBI event records (one object or a list); sendBeacon bodies welcome."""
        return await collect(request, RecordKind.EVENT, events_topic)

    return router


def _check_rate(limiter: RateLimiter | None, request: Request) -> None:
    """429 for a client address that used up its bucket."""
    if limiter is None:
        return
    address = request.client.host if request.client else "unknown"
    wait = limiter.take(address)
    if wait > 0:
        refusal = _Refusal(
            429,
            f"client {address} is over rate_per_s={limiter.rate_per_s:g} "
            f"(burst={limiter.burst}); retry in {wait:.1f} s",
            "rate_limited",
        )
        refusal.headers = {"Retry-After": str(math.ceil(wait))}
        raise refusal


def _check_media_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in ACCEPTED_TYPES:
        raise _Refusal(
            415,
            f"content type {media_type!r} is not accepted: send application/json or text/plain",
            "unsupported_media_type",
        )


class _RecordChecks:
    """What each record of a body must pass before it is produced, and the mark it gets."""

    def __init__(
        self, settings: CollectorSettings, max_record_bytes: int, signer: QueryIdSigner | None
    ) -> None:
        self.settings, self.max_record_bytes, self.signer = settings, max_record_bytes, signer

    def records(self, body: bytes, kind: RecordKind) -> list[tuple[str, bytes]]:
        """(record id, record bytes) for every record of the body; 422 if any is invalid."""
        data = _parse(body)
        items = data if isinstance(data, list) else [data]
        if not items:
            raise _Refusal(
                422, "body is an empty list: send at least one record", "invalid_request_error"
            )
        if len(items) > self.settings.max_records:
            limit = self.settings.max_records
            message = f"body has {len(items)} records; the limit is max_records={limit}"
            raise _Refusal(413, message, "request_too_large")
        accepted: list[tuple[str, bytes]] = []
        errors: list[dict[str, Any]] = []
        for position, item in enumerate(items):
            record = self._record(item, kind)
            if isinstance(record, Rejection):
                where = f"record[{position}]: " if isinstance(data, list) else ""
                errors.append(
                    {"index": position, "reason": record.reason, "message": where + record.reason}
                )
            else:
                accepted.append(record)
        if errors:
            shown = "; ".join(str(e["message"]) for e in errors[:3])
            more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
            message = f"{len(errors)} invalid {kind.value} record(s), none accepted: {shown}{more}"
            raise _Refusal(422, message, "invalid_request_error", errors[:MAX_LISTED_ERRORS])
        return accepted

    def _record(self, item: Any, kind: RecordKind) -> tuple[str, bytes] | Rejection:
        too_big = self._attribute_caps(item, kind)
        if too_big is not None:
            return too_big
        self._mark(item, kind)
        text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
        raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate: refused as not UTF-8
        record = validate_record(raw, kind, self.max_record_bytes, int(time.time() * 1000))
        return record if isinstance(record, Rejection) else (record.record_id, raw)

    def _attribute_caps(self, item: Any, kind: RecordKind) -> Rejection | None:
        field = ATTRIBUTES[kind]
        attributes = item.get(field) if isinstance(item, dict) else None
        if not isinstance(attributes, dict):
            return None  # absent, or not an object: the validator names that
        cap = self.settings.max_attribute_keys
        if len(attributes) > cap:
            return Rejection(
                f"{field} has {len(attributes)} keys; the limit is max_attribute_keys={cap}"
            )
        cap = self.settings.max_attribute_value_bytes
        for key, value in attributes.items():
            size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
            if size > cap:
                return Rejection(
                    f"{field}.{key} is {size} bytes as JSON; the limit is "
                    f"max_attribute_value_bytes={cap}"
                )
        return None

    def _mark(self, item: Any, kind: RecordKind) -> None:
        """`query_id_verified` in the attributes of a record with a query id (signer set)."""
        if self.signer is None or not isinstance(item, dict) or item.get("query_id") is None:
            return
        attributes = item.setdefault(ATTRIBUTES[kind], {})
        if isinstance(attributes, dict):
            attributes[VERIFIED] = self.signer.verify(item["query_id"])


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise _Refusal(422, f"body is not JSON: {exc}", "invalid_request_error") from exc


def _error(refusal: _Refusal, headers: dict[str, str] | None = None) -> JSONResponse:
    details = {} if refusal.details is None else {"records": refusal.details}
    headers = {**refusal.headers, **(headers or {})}
    return error_response(refusal.status, refusal.message, refusal.kind, headers, **details)
