"""Create the UBI topics and their dead-letter topics when they do not exist yet."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from kafka.errors import KafkaError, TopicAlreadyExistsError

from ingest.errors import BrokerUnavailable, SetupError

__all__ = ["Admin", "ensure_topics"]

log = logging.getLogger(__name__)


class Admin(Protocol):
    """The methods of `kafka.KafkaAdminClient` used here."""

    def list_topics(self) -> Any: ...

    def create_topics(self, new_topics: Any, **kwargs: Any) -> Any: ...

    def wait_for_topics(self, topic_names: Any, timeout_ms: int = ...) -> Any: ...


def ensure_topics(
    admin: Admin, topics: Iterable[str], *, partitions: int, replication: int
) -> list[str]:
    """Create the missing ones of `topics`; return the names created (already there: skipped)."""
    try:
        existing = set(admin.list_topics())
        missing = sorted(set(topics) - existing)
        if missing:
            spec = {
                name: {"num_partitions": partitions, "replication_factor": replication}
                for name in missing
            }
            _check(admin.create_topics(spec, raise_errors=False))
            admin.wait_for_topics(missing)
    except KafkaError as exc:
        raise BrokerUnavailable(
            f"cannot create Kafka topics {sorted(set(topics))}: {exc!r}"
        ) from exc
    for name in missing:
        log.info("created topic %s (%d partitions)", name, partitions)
    return missing


def _check(response: dict[str, Any]) -> None:
    """Refuse any per-topic error except 'already exists' (another worker was first)."""
    for topic in response.get("topics", []):
        code = topic.get("error_code", 0)
        if code not in (0, TopicAlreadyExistsError.errno):
            raise SetupError(
                f"Kafka refused to create topic {topic.get('name')!r}: "
                f"error {code} {topic.get('error_message')}"
            )
