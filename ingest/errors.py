"""The ingest package's exceptions; catch `IngestError` to catch them all.

    IngestError
    ├── RetryableError        transient: the worker backs off, keeps its batch and tries again
    │   ├── StoreUnavailable  OpenSearch did not acknowledge (connection, timeout, 429, 5xx)
    │   └── BrokerUnavailable Kafka did not acknowledge (DLQ produce, offset commit)
    └── SetupError            the worker cannot start (topic creation, template install, 4xx)

A bad *record* is not an exception: validation returns a `Rejection` and the record goes to the
dead-letter topic, so one bad record never stops the consumer.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "IngestError",
    "RetryableError",
    "SetupError",
    "StoreUnavailable",
]


class IngestError(Exception):
    """Base of every error raised by the ingest package."""


class RetryableError(IngestError):
    """A transient failure: nothing was committed, the same work can be retried."""


class StoreUnavailable(RetryableError):
    """OpenSearch did not acknowledge a bulk write (connection, timeout, 429 or 5xx)."""


class BrokerUnavailable(RetryableError):
    """Kafka did not acknowledge a dead-letter send or an offset commit."""


class SetupError(IngestError):
    """The worker cannot start or go on: topics, templates or a request OpenSearch refuses."""
