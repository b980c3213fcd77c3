"""The dead-letter topic: refused records, byte for byte, with why and where they came from.

A record from `<topic>` partition P offset O goes to `<topic>.dlq` with the original key and
value and the headers `reason`, `source_topic`, `source_partition`, `source_offset` (UTF-8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kafka.errors import KafkaError

from ingest.errors import BrokerUnavailable

__all__ = [
    "DEFAULT_SUFFIX",
    "DeadLetterQueue",
    "KafkaRecord",
    "Producer",
    "SourceRecord",
    "dlq_topic",
]

DEFAULT_SUFFIX = ".dlq"
MAX_REASON_CHARS = 2000


class Producer(Protocol):
    """The two methods of `kafka.KafkaProducer` the dead-letter queue needs."""

    def send(self, topic: str, value: Any = None, key: Any = None, headers: Any = None) -> Any: ...

    def flush(self, timeout: float | None = None) -> None: ...


class KafkaRecord(Protocol):
    """What a dead letter needs of its record: a `SourceRecord` or a kafka `ConsumerRecord`."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


@dataclass(frozen=True)
class SourceRecord:
    """Where a Kafka record came from, and its raw key and value."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dlq_topic(topic: str, suffix: str = DEFAULT_SUFFIX) -> str:
    return f"{topic}{suffix}"


class DeadLetterQueue:
    """Produces refused records to their dead-letter topic; `publish` returns once Kafka acked."""

    def __init__(
        self, producer: Producer, *, suffix: str = DEFAULT_SUFFIX, timeout_s: float = 30.0
    ) -> None:
        self._producer = producer
        self._suffix = suffix
        self._timeout_s = timeout_s

    def publish(self, letters: list[tuple[KafkaRecord, str]]) -> None:
        """Send each (record, reason) and wait for every ack; BrokerUnavailable if any failed."""
        if not letters:
            return
        try:
            futures = [self._send(record, reason) for record, reason in letters]
            self._producer.flush(timeout=self._timeout_s)
            for future in futures:
                future.get(timeout=self._timeout_s)
        except KafkaError as exc:
            raise BrokerUnavailable(
                f"Kafka did not acknowledge {len(letters)} dead letters: {exc!r}"
            ) from exc

    def _send(self, record: KafkaRecord, reason: str) -> Any:
        headers = [
            ("reason", reason[:MAX_REASON_CHARS].encode("utf-8", "replace")),
            ("source_topic", record.topic.encode()),
            ("source_partition", str(record.partition).encode()),
            ("source_offset", str(record.offset).encode()),
        ]
        return self._producer.send(
            dlq_topic(record.topic, self._suffix),
            value=record.value,
            key=record.key,
            headers=headers,
        )
