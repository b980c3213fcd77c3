"""Transient errors of OpenSearch and Kafka: which they are, and the capped backoff between tries.

A stage's work fails transiently when OpenSearch cannot be reached (connection refused or timed
out), answers 429 or 5xx, or Kafka reports a retriable error; the packages below wrap those in
their own errors (`raise ... from exc`), so the whole cause chain is looked at. Anything else is
permanent: a bad mapping, a missing model, a broken gate. The runner (`runner.py`) retries a
transient failure of a stage after `backoff(attempt)` seconds until the stage's deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

from kafka.errors import KafkaError
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import SSLError, TransportError

__all__ = ["backoff", "is_transient"]

# 429: too many requests (bulk queues full); 5xx: a node restarting, a shard not yet started.
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


def backoff(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before try `attempt + 1`: `min(max_s, initial_s * 2 ** (attempt - 1))`."""
    return min(max_s, initial_s * 2 ** max(0, attempt - 1))


def is_transient(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, is one that a later try may not meet."""
    return any(_transient_itself(e) for e in _chain(exc))


def _transient_itself(exc: BaseException) -> bool:
    if isinstance(exc, SSLError):
        return False  # a certificate problem does not heal by waiting
    if isinstance(exc, OpenSearchConnectionError):
        return True
    if isinstance(exc, TransportError):
        return exc.status_code in TRANSIENT_STATUS
    if isinstance(exc, KafkaError):
        return bool(getattr(exc, "retriable", False))
    return isinstance(exc, ConnectionError | TimeoutError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__  # mapped at each boundary with `raise ... from exc`
