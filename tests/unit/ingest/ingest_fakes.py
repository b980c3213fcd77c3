"""Small in-memory stand-ins for the OpenSearch and Kafka clients the ingest package takes."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition


class FakeBulkClient:
    """Answers `_bulk` from a script of per-call outcomes; stores what it acknowledged."""

    def __init__(self, script: list[Any] | None = None) -> None:
        self.script = deque(script or [])  # each: an Exception, or a list of item statuses
        self.calls: list[list[dict[str, Any]]] = []
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}

    def bulk(self, body: bytes | str | list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        if isinstance(body, bytes | str):  # an NDJSON body, as the writer sends it
            body = [json.loads(line) for line in body.splitlines()]
        pairs = list(zip(body[::2], body[1::2], strict=True))
        self.calls.append(body)
        step = self.script.popleft() if self.script else None
        if isinstance(step, Exception):
            raise step
        statuses = step or [201] * len(pairs)
        items = []
        for (action, source), status in zip(pairs, statuses, strict=True):
            meta = action["index"]
            item: dict[str, Any] = {"_index": meta["_index"], "_id": meta["_id"], "status": status}
            if status < 300:
                self.stored[(meta["_index"], meta["_id"])] = source
            else:
                item["error"] = {"type": _ERROR_TYPES.get(status, "error"), "reason": "scripted"}
            items.append({"index": item})
        return {"errors": any(s >= 300 for s in statuses), "items": items}


_ERROR_TYPES = {
    429: "es_rejected_execution_exception",
    400: "mapper_parsing_exception",
    503: "unavailable_shards_exception",
}


@dataclass
class FakeFuture:
    error: Exception | None = None

    def get(self, timeout: float | None = None) -> None:
        if self.error is not None:
            raise self.error


@dataclass
class FakeProducer:
    sent: list[dict[str, Any]] = field(default_factory=list)
    fail_with: Exception | None = None
    flushes: int = 0

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Any:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": dict(headers)})
        return FakeFuture(self.fail_with)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int | None = None  # epoch ms, as kafka's ConsumerRecord


class FakeConsumer:
    """Hands out scripted batches, then nothing; records commits."""

    def __init__(self, batches: list[list[Message]]) -> None:
        self.batches = deque(batches)
        self.commits: list[dict[TopicPartition, Any]] = []
        self.subscribed: list[str] = []
        self.end_offsets: dict[TopicPartition, int] = {}

    def subscribe(self, topics: Any = ()) -> None:
        self.subscribed = list(topics)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(t, 0) for t in self.subscribed}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Message]]:
        if not self.batches:
            return {}
        batch = self.batches.popleft()
        grouped: dict[TopicPartition, list[Message]] = {}
        for message in batch:
            grouped.setdefault(TopicPartition(message.topic, message.partition), []).append(message)
        return grouped

    def commit(self, offsets: Any = None) -> None:
        self.commits.append(dict(offsets))

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.end_offsets.get(partition)
