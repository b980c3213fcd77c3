"""Idempotent bulk writes to OpenSearch with per-item results.

Every document is written with `_id` = its record id and `op_type` index, so writing a batch
twice leaves the index as writing it once. Items OpenSearch answers with 429 / 5xx /
`*_rejected_execution_exception` are retried with capped exponential backoff
`min(max_backoff_s, initial_backoff_s * 2 ** (attempt - 1))`, at most `max_attempts` times;
items refused for good (mapping errors, other 4xx) come back as dead letters.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from opensearchpy.exceptions import ConnectionError as OSConnectionError
from opensearchpy.exceptions import TransportError

from ingest.errors import IngestError, SetupError, StoreUnavailable

__all__ = [
    "BulkClient",
    "BulkLine",
    "BulkWriter",
    "DeadLetter",
    "Document",
    "WriteResult",
    "backoff_s",
    "store_error",
]

log = logging.getLogger(__name__)

RETRYABLE_TYPES = ("es_rejected_execution_exception", "rejected_execution_exception")
# Only what the writer reads of a bulk answer: a tenth of the bytes to receive and parse.
BULK_FILTER_PATH = "errors,items.*.status,items.*.error"


def _json_bytes(source: dict[str, Any]) -> bytes:
    """`source` as JSON: orjson, or the stdlib for what orjson refuses (UBI integers have no
    range; orjson stops at 64 bits)."""
    try:
        return orjson.dumps(source)
    except TypeError:
        return json.dumps(source, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class BulkClient(Protocol):
    """The one method of `opensearchpy.OpenSearch` the writer needs."""

    def bulk(self, body: Any, **params: Any) -> Any: ...


@dataclass(slots=True)
class Document:
    """One record to store (read-only); `origin` is carried back untouched with a dead letter."""

    index: str
    doc_id: str
    source: dict[str, Any]
    origin: Any = None


@dataclass(frozen=True)
class DeadLetter:
    document: Document
    reason: str


@dataclass
class WriteResult:
    written: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    retries: int = 0


def backoff_s(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based), capped at `max_s`."""
    return min(max_s, initial_s * 2 ** (attempt - 1))


def store_error(exc: TransportError, action: str) -> IngestError:
    """Map an opensearch-py error to ours: unreachable / 429 / 5xx are retryable, else not."""
    status = exc.status_code
    if (
        isinstance(exc, OSConnectionError)
        or status == 429
        or (isinstance(status, int) and status >= 500)
    ):
        return StoreUnavailable(f"OpenSearch did not acknowledge {action}: {exc}")
    return SetupError(f"OpenSearch refused {action} with status {status}: {exc}")


class BulkWriter:
    """Writes documents with `_bulk`, retrying what may succeed later, returning what never will."""

    def __init__(
        self,
        client: BulkClient,
        *,
        max_attempts: int = 5,
        initial_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_bulk_bytes: int = 10 * 1024 * 1024,
        concurrency: int = 1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._max_attempts = max_attempts
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_bulk_bytes = max_bulk_bytes
        self._concurrency = concurrency
        self._sleep = sleep

    @staticmethod
    def encode(documents: Sequence[Document]) -> list[BulkLine]:
        """The bulk-body lines of `documents`, for `write_lines`."""
        return [BulkLine.of(document) for document in documents]

    def write(self, documents: Sequence[Document]) -> WriteResult:
        """Store every document or return it as a dead letter; raise StoreUnavailable otherwise."""
        return self.write_lines(self.encode(documents))

    def write_lines(self, lines: Sequence[BulkLine]) -> WriteResult:
        """`write` of documents already encoded.

        With `concurrency` > 1 the documents go as that many bulk requests at once, so that
        OpenSearch indexes them on as many write threads.
        """
        total = sum(len(line.text) for line in lines)
        limit = min(self._max_bulk_bytes, total // self._concurrency + 1)
        chunks = list(self._chunks(lines, limit))
        results = [WriteResult() for _ in chunks]
        if len(chunks) <= 1 or self._concurrency == 1:
            for chunk, part in zip(chunks, results, strict=True):
                self._write_chunk(chunk, part)
        else:
            with ThreadPoolExecutor(min(self._concurrency, len(chunks))) as pool:
                # list(): wait for every chunk and re-raise the first failure
                list(pool.map(self._write_chunk, chunks, results))
        return _merge(results)

    def _write_chunk(self, chunk: list[BulkLine], result: WriteResult) -> None:
        pending = chunk
        for attempt in range(1, self._max_attempts + 1):
            items = self._bulk(pending)
            if items is None:  # every item stored
                result.written += len(pending)
                return
            retry: list[tuple[BulkLine, str]] = []
            for line, item in zip(pending, items, strict=True):
                outcome = _outcome(item)
                if outcome is None:
                    result.written += 1
                elif _is_retryable(item):
                    retry.append((line, outcome))
                else:
                    result.dead_letters.append(DeadLetter(line.document, outcome))
            if not retry:
                return
            if attempt == self._max_attempts:
                raise StoreUnavailable(
                    f"{len(retry)} records still refused after {attempt} attempts "
                    f"(max_attempts={self._max_attempts}); first: {retry[0][1]}"
                )
            wait = backoff_s(attempt, self._initial_backoff_s, self._max_backoff_s)
            log.warning(
                "bulk: %d items refused for now (%s); retry %d in %.1f s",
                len(retry),
                retry[0][1],
                attempt,
                wait,
            )
            result.retries += 1
            self._sleep(wait)
            pending = [line for line, _ in retry]

    def _bulk(self, lines: list[BulkLine]) -> list[dict[str, Any]] | None:
        """The per-item answers of one bulk request, or None when it stored every item."""
        body = b"".join(line.text for line in lines)
        try:
            response = self._client.bulk(body=body, filter_path=BULK_FILTER_PATH)
        except TransportError as exc:
            raise store_error(exc, f"a bulk write of {len(lines)} records") from exc
        items = response.get("items", [])
        if len(items) != len(lines):
            raise StoreUnavailable(
                f"bulk answered {len(items)} items for {len(lines)} records; retrying"
            )
        if response.get("errors") is False:
            return None
        return [next(iter(item.values())) for item in items]

    @staticmethod
    def _chunks(lines: Sequence[BulkLine], limit: int) -> Iterator[list[BulkLine]]:
        """Bulk bodies of at most `limit` bytes (or one document, if it is larger)."""
        chunk: list[BulkLine] = []
        size = 0
        for line in lines:
            if chunk and size + len(line.text) > limit:
                yield chunk
                chunk, size = [], 0
            chunk.append(line)
            size += len(line.text)
        if chunk:
            yield chunk


def _merge(results: list[WriteResult]) -> WriteResult:
    merged = WriteResult()
    for part in results:
        merged.written += part.written
        merged.dead_letters += part.dead_letters
        merged.retries += part.retries
    return merged


@dataclass(slots=True)
class BulkLine:
    """A document with its two NDJSON lines of the bulk body (action and source), as UTF-8."""

    document: Document
    text: bytes

    @classmethod
    def of(cls, document: Document) -> BulkLine:
        # Serialised once (orjson: ~10x the stdlib's speed) so that sizing and retries reuse it.
        action = orjson.dumps({"index": {"_index": document.index, "_id": document.doc_id}})
        return cls(document, b"%b\n%b\n" % (action, _json_bytes(document.source)))


def _outcome(item: dict[str, Any]) -> str | None:
    """None when the item was stored, else a reason naming the status and OpenSearch's error."""
    status = int(item.get("status", 500))
    if 200 <= status < 300 and "error" not in item:
        return None
    error = item.get("error") or {}
    if isinstance(error, dict):
        return f"opensearch {status} {error.get('type', 'error')}: {error.get('reason', '')}"
    return f"opensearch {status}: {error}"


def _is_retryable(item: dict[str, Any]) -> bool:
    status = int(item.get("status", 500))
    error = item.get("error")
    kind = error.get("type", "") if isinstance(error, dict) else ""
    return status == 429 or status >= 500 or kind in RETRYABLE_TYPES
