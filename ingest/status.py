"""How far behind the consumer group is, per partition, how fast it commits, and DLQ sizes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from ingest.errors import BrokerUnavailable

__all__ = [
    "IngestStatus",
    "OffsetReader",
    "PartitionLag",
    "committed_rate",
    "ingest_status",
    "with_rate",
]


class OffsetReader(Protocol):
    """The methods of a `kafka.KafkaConsumer` built with the worker's group_id (not subscribed)."""

    def partitions_for_topic(self, topic: str) -> Any: ...

    def committed(self, partition: TopicPartition) -> int | None: ...

    def beginning_offsets(self, partitions: list[TopicPartition]) -> Any: ...

    def end_offsets(self, partitions: list[TopicPartition]) -> Any: ...


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here (it starts from the beginning)
    end: int
    lag: int


@dataclass(frozen=True)
class IngestStatus:
    group_id: str
    partitions: list[PartitionLag]
    dlq_records: dict[str, int]
    records_per_s: float | None = None
    rate_source: str = "none"  # "metrics" (a running worker's /metrics), "offsets" or "none"

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_lag": self.total_lag}


def ingest_status(
    reader: OffsetReader, group_id: str, topics: list[str], dlq_topics: list[str]
) -> IngestStatus:
    """Committed vs end offsets of `topics` for the group, and the record count of each DLQ."""
    try:
        lags = [lag for topic in topics for lag in _topic_lag(reader, topic)]
        dlq = {topic: _topic_size(reader, topic) for topic in dlq_topics}
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read offsets of {topics + dlq_topics}: {exc!r}") from exc
    return IngestStatus(group_id, lags, dlq)


def _partitions(reader: OffsetReader, topic: str) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or [])]


def _topic_lag(reader: OffsetReader, topic: str) -> list[PartitionLag]:
    partitions = _partitions(reader, topic)
    if not partitions:
        return []
    begin, end = reader.beginning_offsets(partitions), reader.end_offsets(partitions)
    lags = []
    for tp in partitions:
        committed = reader.committed(tp)
        start = committed if committed is not None else begin[tp]
        lags.append(PartitionLag(topic, tp.partition, committed, end[tp], max(0, end[tp] - start)))
    return lags


def _topic_size(reader: OffsetReader, topic: str) -> int:
    partitions = _partitions(reader, topic)
    if not partitions:
        return 0
    begin, end = reader.beginning_offsets(partitions), reader.end_offsets(partitions)
    return sum(end[tp] - begin[tp] for tp in partitions)


def with_rate(status: IngestStatus, records_per_s: float, source: str) -> IngestStatus:
    return replace(status, records_per_s=records_per_s, rate_source=source)


def committed_rate(
    reader: OffsetReader,
    topics: list[str],
    interval_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Records/s the group committed over about `interval_s` (two readings of its offsets)."""
    try:
        partitions = [tp for topic in topics for tp in _partitions(reader, topic)]
        first, started = _committed_sum(reader, partitions), clock()
        sleep(interval_s)
        second, elapsed = _committed_sum(reader, partitions), clock() - started
    except KafkaError as exc:
        raise BrokerUnavailable(f"cannot read committed offsets of {topics}: {exc!r}") from exc
    return (second - first) / elapsed if elapsed > 0 else 0.0


def _committed_sum(reader: OffsetReader, partitions: list[TopicPartition]) -> int:
    return sum(reader.committed(tp) or 0 for tp in partitions)
