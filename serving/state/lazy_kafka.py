"""Kafka clients made on a background thread, so a replica starts and serves while Kafka is down.

kafka-python's producer and consumer block for up to 30 s in their constructors when no broker
answers, then raise. `LazyProducer` is built by `connect()` (the spool replayer calls it); until
then `send` fails at once, so a search never waits for a broker and its query record goes to the
spool. `LazyConsumer` builds its consumer inside the first `poll` (on the listener's own thread)
and tries again at the next poll when it cannot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaConnectionError

__all__ = ["LazyConsumer", "LazyProducer"]

log = logging.getLogger(__name__)


class LazyProducer:
    """A producer made by `factory` on `connect()`; `send` raises until then."""

    def __init__(self, factory: Callable[[], Any], retry_s: float = 5.0) -> None:
        self._factory, self._retry_s = factory, retry_s
        self._producer: Any = None
        self._lock = threading.Lock()
        self._failed_at: float | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def connect(self) -> bool:
        """Make the producer unless it exists or the last try was under `retry_s` ago."""
        with self._lock:
            if self._producer is not None:
                return True
            if self._failed_at is not None and time.monotonic() - self._failed_at < self._retry_s:
                return False
            try:
                self._producer = self._factory()
            except Exception as exc:  # noqa: BLE001 - kafka-python raises KafkaError and timeouts
                self._failed_at = time.monotonic()
                log.warning(
                    "Kafka producer not connected yet, retrying in %.0f s: %s", self._retry_s, exc
                )
                return False
            log.info("Kafka producer connected")
            return True

    def send(self, topic: str, **kwargs: Any) -> Any:
        producer = self._producer
        if producer is None:
            raise KafkaConnectionError("the Kafka producer is not connected (yet)")
        return producer.send(topic, **kwargs)

    def flush(self, timeout: float | None = None) -> None:
        if self._producer is not None:
            self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        if self._producer is not None:
            self._producer.close(timeout=timeout)


class LazyConsumer:
    """A consumer made by `factory` in the first `poll`; an empty poll while it cannot be made."""

    def __init__(self, factory: Callable[[], Any], retry_s: float = 5.0) -> None:
        self._factory, self._retry_s = factory, retry_s
        self._consumer: Any = None
        self._stopped = threading.Event()

    def poll(self, timeout_ms: int = 0, **kwargs: Any) -> dict[Any, Any]:
        if self._consumer is None:
            try:
                self._consumer = self._factory()
            except Exception as exc:  # noqa: BLE001 - kafka-python raises KafkaError and timeouts
                log.warning(
                    "Kafka consumer not connected yet, retrying in %.0f s: %s", self._retry_s, exc
                )
                self._stopped.wait(self._retry_s)
                return {}
        return self._consumer.poll(timeout_ms=timeout_ms, **kwargs)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._stopped.set()
        if self._consumer is not None:
            self._consumer.close()
