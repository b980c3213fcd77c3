"""Where `/v1/search` publishes its UBI query records: Kafka in production, memory in tests.

`clicktune serve` uses `SpooledQueryLog`: the record goes to Kafka or, while Kafka does not take
it, to the local spool (serving/state/spool.py); a search answers either way, even when the spool is
full (the record is then dropped, counted and logged).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any, Protocol

from serving.errors import QueryLogError
from serving.state.spool import SpoolFullError

__all__ = ["InMemoryQueryLog", "KafkaQueryLog", "QueryLog", "SpooledQueryLog"]


class QueryLog(Protocol):
    """Publishes one UBI query record; raises `QueryLogError` when it cannot."""

    def publish(self, record: dict[str, Any]) -> None: ...


class KafkaQueryLog:
    """Sends each record to `topic`, keyed by `query_id`, and waits for the broker's ack.

    The producer should be built with `acks="all"` (see `clicktune serve`); waiting for the ack
    means a search answer is never given for a query that was not durably logged.
    """

    def __init__(self, producer: Any, topic: str, timeout_s: float = 10.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    def publish(self, record: dict[str, Any]) -> None:
        key = str(record.get("query_id", "")).encode()
        value = json.dumps(record, separators=(",", ":")).encode()
        try:
            self._producer.send(self._topic, key=key, value=value).get(timeout=self._timeout_s)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise QueryLogError(
                f"query record {record.get('query_id')!r} not acknowledged by topic "
                f"{self._topic!r} within {self._timeout_s} s: {exc}"
            ) from exc


class _Sink(Protocol):
    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


class SpooledQueryLog:
    """Publishes through a `SpoolingSink`: Kafka, or the spool while Kafka is down; a record the
    full spool had to drop does not fail the search (the spool counted and logged it)."""

    def __init__(self, sink: _Sink, topic: str) -> None:
        self._sink, self._topic = sink, topic

    def publish(self, record: dict[str, Any]) -> None:
        key = str(record.get("query_id", "")).encode()
        value = json.dumps(record, separators=(",", ":")).encode()
        # Dropped when the spool is full: counted in clicktune_spool_dropped_total and logged.
        with contextlib.suppress(SpoolFullError):
            self._sink.send_many(self._topic, [(key, value)])


class InMemoryQueryLog:
    """Keeps records in a list; `fail = True` makes `publish` raise, to test the 503 path."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail = False

    def publish(self, record: dict[str, Any]) -> None:
        if self.fail:
            raise QueryLogError("in-memory query log set to fail")
        self.records.append(record)
