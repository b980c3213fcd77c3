"""A bounded local spool for UBI records while Kafka cannot take them, replayed when it can.

`SpoolingSink` sits in front of the Kafka sink of `/v1/search` (query records) and of the
collector: a record goes straight to Kafka while the spool is empty; when Kafka does not
acknowledge (broker down at start or mid-run), the record goes to an append-only JSONL file per
topic under `$CLICKTUNE_HOME/spool/`, and so does every later record until the spool is empty
again, so each topic keeps its order. `SpoolReplayer` (a `BackgroundLoop`) sends the spooled
records, oldest first, as soon as Kafka acknowledges them, then cuts them from the file. A batch
whose acks do not come in time is not sent again while the producer still holds it (it keeps
retrying): it is cut once acknowledged, sent again only once the producer gave up on it. Delivery
is at least once: a record Kafka took but did not acknowledge in time (its send was spooled, or
a partial batch is sent again) reaches the topic twice. Records keep their ids, so a copy only
overwrites downstream (the ingest worker writes by id).

The spool is bounded in bytes (`serving.spool.max_bytes`, all topics together): a record that
does not fit is dropped, counted in `clicktune_spool_dropped_total{topic}` and logged; the send
raises `SpoolFullError` (a search still answers, the collector answers 503). Spooled lines are
flushed to the OS (they survive a crash of the process, not of the machine). Records spooled and
replayed since the start are counted in `clicktune_spool_spooled_total{topic}` and
`clicktune_spool_replayed_total{topic}`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from serving.errors import QueryLogError
from serving.state.background import BackgroundLoop

__all__ = ["Spool", "SpoolFullError", "SpoolReplayer", "SpoolingSink", "spool_metrics"]

log = logging.getLogger(__name__)


class SpoolFullError(QueryLogError):
    """Kafka did not take a record and the spool has no room for it: the record is dropped."""


class _Sink(Protocol):
    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None: ...


class _Delivery(Protocol):
    def wait(self) -> None: ...
    def settled(self) -> bool: ...
    def failed(self) -> bool: ...


class _Producer(Protocol):
    def submit(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> _Delivery: ...


@dataclass(frozen=True)
class _InFlight:
    """A replayed batch Kafka did not acknowledge in time: the first `used` bytes of `topic`."""

    topic: str
    used: int
    count: int
    delivery: _Delivery


class Spool:
    """Append-only JSONL files, one per topic under `root`, at most `max_bytes` in all."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root, self.max_bytes = Path(root), max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.dropped: dict[str, int] = {}
        self.spooled: dict[str, int] = {}
        self.replayed: dict[str, int] = {}
        self._lock = threading.Lock()
        self._size = sum(p.stat().st_size for p in self.root.glob("*.jsonl"))

    @property
    def size(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def topics(self) -> list[str]:
        """Topics with spooled records."""
        return sorted(p.stem for p in self.root.glob("*.jsonl") if p.stat().st_size > 0)

    def append(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Spool `records` for `topic`, all or none; `SpoolFullError` when they do not fit."""
        lines = b"".join(_line(key, value) for key, value in records)
        with self._lock:
            if self._size + len(lines) > self.max_bytes:
                self.dropped[topic] = self.dropped.get(topic, 0) + len(records)
                raise SpoolFullError(
                    f"spool full ({self._size} of max_bytes={self.max_bytes}): {len(records)} "
                    f"record(s) for topic {topic!r} dropped"
                )
            with self._path(topic).open("ab") as out:
                out.write(lines)
                out.flush()
            self._size += len(lines)
            self.spooled[topic] = self.spooled.get(topic, 0) + len(records)

    def read(self, topic: str, limit: int) -> tuple[list[tuple[bytes, bytes]], int]:
        """The oldest `limit` records of `topic` and the bytes they take in the file."""
        records: list[tuple[bytes, bytes]] = []
        used = 0
        with self._lock, self._path(topic).open("rb") as spooled:
            for raw in spooled:
                if len(records) == limit or not raw.endswith(b"\n"):
                    break  # a line still being written ends the read
                entry = json.loads(raw)
                records.append((_bytes(entry["key"]), _bytes(entry["value"])))
                used += len(raw)
        return records, used

    def cut(self, topic: str, used: int, count: int) -> None:
        """Remove the first `used` bytes of `topic`'s file: `count` records Kafka acknowledged."""
        path = self._path(topic)
        with self._lock:
            rest = path.read_bytes()[used:]
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(rest)
            tmp.replace(path)
            self._size -= used
            self.replayed[topic] = self.replayed.get(topic, 0) + count

    def _path(self, topic: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in topic)
        return self.root / f"{safe}.jsonl"


def _line(key: bytes, value: bytes) -> bytes:
    entry = {"key": _text(key), "value": _text(value)}
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")  # any bytes round-trip through JSON


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class SpoolingSink:
    """Sends through `sink` (Kafka) while the spool is empty, spools otherwise or when it fails.

    Both methods return once each record is acknowledged by Kafka or spooled; they raise
    `SpoolFullError` only when a record was dropped."""

    def __init__(self, sink: _Sink, spool: Spool) -> None:
        self.sink, self.spool = sink, spool

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        self.send_many(topic, [(key, value)])

    def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        if self.spool.empty():
            try:
                self.sink.send_many(topic, records)
                return
            except QueryLogError as exc:
                log.warning("Kafka did not take %d record(s), spooling: %s", len(records), exc)
        try:
            self.spool.append(topic, records)
        except SpoolFullError as exc:
            log.error("%s", exc)
            raise


class SpoolReplayer(BackgroundLoop):
    """Sends spooled records to Kafka in order, `batch` at a time, every `interval_s` while
    Kafka does not take them. `connect` (e.g. `LazyProducer.connect`) is called first on each
    step; while it answers False nothing is sent. A batch not acknowledged in time is sent
    again only once `sink` gave up on it (see the module docstring)."""

    name = "clicktune-spool-replayer"

    def __init__(
        self,
        spool: Spool,
        sink: _Producer,
        interval_s: float,
        batch: int = 500,
        connect: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__()
        self.spool, self.sink, self.interval_s, self.batch = spool, sink, interval_s, batch
        self.connect = connect
        self._in_flight: _InFlight | None = None

    def step(self) -> None:
        connected = self.connect is None or self.connect()
        if not connected or self.spool.empty() or not self.replay_once():
            self._stop.wait(self.interval_s)

    def replay_once(self) -> bool:
        """Send one batch of each topic; False when Kafka refused one or has not acknowledged
        an earlier one yet (the rest waits)."""
        if self._in_flight is not None and not self._settle(self._in_flight):
            return False
        for topic in self.spool.topics():
            records, used = self.spool.read(topic, self.batch)
            if not records:
                continue
            try:
                delivery = self.sink.submit(topic, records)
            except QueryLogError as exc:  # the producer took none of them
                return self._waits(exc)
            try:
                delivery.wait()
            except QueryLogError as exc:  # the producer holds them and keeps trying
                self._in_flight = _InFlight(topic, used, len(records), delivery)
                return self._waits(exc)
            self._cut(topic, used, len(records))
        return True

    def _settle(self, batch: _InFlight) -> bool:
        """False while the producer still holds `batch`; once it is done, cut `batch` if Kafka
        acknowledged it all (else it is sent again) and answer True."""
        if not batch.delivery.settled():
            return False
        self._in_flight = None
        if not batch.delivery.failed():
            self._cut(batch.topic, batch.used, batch.count)
        return True

    def _cut(self, topic: str, used: int, count: int) -> None:
        self.spool.cut(topic, used, count)
        log.info("replayed %d spooled record(s) to %s", count, topic)

    def _waits(self, exc: QueryLogError) -> bool:
        log.info("spool replay waits for Kafka (%d bytes spooled): %s", self.spool.size, exc)
        return False


class _SpoolCollector(Collector):
    def __init__(self, spool: Spool) -> None:
        self.spool = spool

    def collect(self) -> Iterator[Any]:
        counts = {
            "dropped": "UBI records dropped because Kafka was down and the spool was full",
            "spooled": "UBI records that went to the local spool because Kafka did not take them",
            "replayed": "spooled UBI records that Kafka acknowledged later",
        }
        for what, description in counts.items():
            counter = CounterMetricFamily(f"clicktune_spool_{what}", description, labels=["topic"])
            for topic, count in sorted(getattr(self.spool, what).items()):
                counter.add_metric([topic], count)
            yield counter
        size = GaugeMetricFamily("clicktune_spool_bytes", "bytes waiting in the local spool")
        size.add_metric([], self.spool.size)
        yield size


def spool_metrics(spool: Spool) -> Collector:
    """`clicktune_spool_{dropped,spooled,replayed}_total{topic}` and `clicktune_spool_bytes`."""
    return _SpoolCollector(spool)
