"""How replicas learn that the live model changed: the Kafka control topic and registry polling.

Both followers run as daemon threads with `start()` / `stop()`; each calls `follow(version)` on
the replica's `HotSwapper`, which refuses a broken model, or a query model whose document model
did not build the live index, and keeps the old one serving. A version refused once is not
retried until the alias names another version.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from serving.errors import ServingError, SwapRefusedError
from serving.rollout.hotswap import HotSwapper
from serving.state.background import BackgroundLoop

__all__ = ["ControlListener", "ControlPublisher", "RegistryPoller", "model_changed"]

log = logging.getLogger(__name__)

MODEL_CHANGED = "model_changed"
POLL_TIMEOUT_MS = 500


def model_changed(alias: str, version: str, reindex: bool = False) -> dict[str, Any]:
    """The control message that tells replicas `alias` now names `version`."""
    message: dict[str, Any] = {"type": MODEL_CHANGED, "alias": alias, "version": version}
    if reindex:  # the new version has another dimension; its index is being rebuilt
        message["reindex"] = True
    return message


class ControlPublisher:
    """Publishes control messages to the control topic and waits for the broker's ack."""

    def __init__(self, producer: Any, topic: str, timeout_s: float = 10.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout_s = timeout_s

    def publish(self, message: dict[str, Any]) -> None:
        value = json.dumps(message, separators=(",", ":")).encode()
        try:
            self._producer.send(self._topic, value=value).get(timeout=self._timeout_s)
        except Exception as exc:  # kafka-python raises KafkaError subclasses and timeouts
            raise ServingError(
                f"control message {message} not acknowledged by topic {self._topic!r} "
                f"within {self._timeout_s} s: {exc}"
            ) from exc


class _Follower:
    """Swaps to a version once; a refused one is not retried until another version is named
    (a query model refused over another model's index may fit once the alias comes back)."""

    def __init__(self, swapper: HotSwapper) -> None:
        self.swapper = swapper
        self.refused: str | None = None

    def follow(self, version: str, reindex: bool = False) -> None:
        if version == self.refused:
            return
        self.refused = None
        if version == self.swapper.slot.version:
            return
        try:
            self.swapper.swap_to(version, reindex=reindex)
        except SwapRefusedError:
            self.refused = version  # the swapper logged why and counted it


class RegistryPoller(BackgroundLoop):
    """Every `interval_s`, serve the version `alias` names in the registry."""

    name = "clicktune-registry-poller"

    def __init__(self, swapper: HotSwapper, alias: str, interval_s: float) -> None:
        super().__init__()
        self._follower = _Follower(swapper)
        self._alias = alias
        self._interval_s = interval_s

    def step(self) -> None:
        self.check_once()
        self._stop.wait(self._interval_s)

    def check_once(self) -> None:
        with self._follower.swapper.lock:  # an admin promote moves slot and alias together
            target = self._follower.swapper.registry.aliases().get(self._alias)
            if target is not None:
                self._follower.follow(target)


class ControlListener(BackgroundLoop):
    """Reads `model_changed` messages for `alias` from a subscribed Kafka consumer."""

    name = "clicktune-control-listener"

    def __init__(self, consumer: Any, swapper: HotSwapper, alias: str) -> None:
        super().__init__()
        self._consumer = consumer
        self._follower = _Follower(swapper)
        self._alias = alias

    def step(self) -> None:
        batches = self._consumer.poll(timeout_ms=POLL_TIMEOUT_MS)
        for records in batches.values():
            for record in records:
                self.handle(record.value)

    def handle(self, raw: bytes) -> None:
        try:
            message = json.loads(raw)
        except (TypeError, ValueError):
            log.warning("control message is not JSON, ignored: %r", raw[:200])
            return
        if not isinstance(message, dict) or message.get("type") != MODEL_CHANGED:
            return
        if message.get("alias") == self._alias and isinstance(message.get("version"), str):
            self._follower.follow(message["version"], reindex=message.get("reindex") is True)

    def close(self) -> None:
        self._consumer.close()


def stop_all(loops: list[BackgroundLoop]) -> None:
    """Stop every follower (used by `clicktune serve` on shutdown)."""
    for loop in loops:
        loop.stop()
