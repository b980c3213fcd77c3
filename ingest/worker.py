"""The ingest worker: UBI records from Kafka into OpenSearch, at least once, exactly-once effect.

One loop, batch after batch; the store steps run in a second thread, one batch after the other,
while the next batches are polled and validated (up to IN_FLIGHT batches wait to be stored, so
that OpenSearch is never left idle between two batches); each batch is committed (by the
polling thread, in order) once it is stored:

    poll -> validate -> dead-letter the bad (wait for acks) -> bulk write the good
         -> dead-letter what OpenSearch refuses for good -> commit offsets

Offsets are committed only after every record of the batch is either acknowledged by OpenSearch
or acknowledged on its dead-letter topic, so a crash anywhere loses nothing; records carry their
id as `_id`, so re-reading them after a crash overwrites instead of duplicating. When OpenSearch
or Kafka fails, the worker keeps the batch, stops polling, backs off (capped) and tries again.
`stop()` (SIGTERM / SIGINT) lets the current batch finish and commit, then `run` returns.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from kafka.errors import CommitFailedError, KafkaError
from kafka.errors import IllegalStateError as KafkaIllegalStateError
from kafka.structs import OffsetAndMetadata, TopicPartition

from ingest.config import IngestSettings
from ingest.dlq import DeadLetterQueue, KafkaRecord, Producer, dlq_topic
from ingest.errors import BrokerUnavailable, RetryableError
from ingest.metrics import IngestMetrics
from ingest.runtime import fewer_gc_pauses
from ingest.templates import install_templates
from ingest.topics import Admin, ensure_topics
from ingest.validate import RecordKind, Rejection, validate_record
from ingest.writer import BulkClient, BulkLine, BulkWriter, Document, WriteResult, backoff_s

__all__ = ["Consumer", "IngestStats", "IngestWorker", "handle_signals"]

log = logging.getLogger(__name__)
T = TypeVar("T")
IN_FLIGHT = 2  # batches validated and queued for the store thread, not yet committed


class Consumer(Protocol):
    """The methods of `kafka.KafkaConsumer` the worker uses (enable_auto_commit=False)."""

    def subscribe(self, topics: Any = ...) -> None: ...

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Any: ...

    def commit(self, offsets: Any = None) -> None: ...

    def assignment(self) -> Any: ...

    def highwater(self, partition: TopicPartition) -> int | None: ...


@dataclass(frozen=True)
class IngestStats:
    """Counters since the worker started."""

    read: int
    written: int
    dead_lettered: int
    batches: int
    retries: int
    elapsed_s: float
    active_s: float = 0.0  # from the start of the first batch to the commit of the last

    @property
    def records_per_s(self) -> float:
        return self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def active_records_per_s(self) -> float:
        """The rate while there was work: group joins and idle waits left out."""
        return self.read / self.active_s if self.active_s > 0 else 0.0


@dataclass(frozen=True)
class _Batch:
    """One poll's records: validated, not yet stored or committed."""

    messages: list[Any]
    documents: list[Document]
    lines: list[BulkLine]
    rejected: list[tuple[KafkaRecord, str]]
    started: float


class _Abandoned(Exception):
    """Stop was requested while the batch could not be finished; it stays uncommitted."""


class IngestWorker:
    """Consumes `settings.queries_topic` and `settings.events_topic` into their indexes."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer,
        opensearch: Any,
        settings: IngestSettings,
        *,
        admin: Admin | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: IngestMetrics | None = None,
    ) -> None:
        self._consumer = consumer
        self._metrics = metrics or IngestMetrics()
        self._opensearch = opensearch
        self._admin = admin
        self._settings = settings
        self._clock = clock
        self._stop = threading.Event()
        bulk_client: BulkClient = opensearch
        self._writer = BulkWriter(
            bulk_client,
            max_attempts=settings.bulk_max_attempts,
            initial_backoff_s=settings.initial_backoff_s,
            max_backoff_s=settings.max_backoff_s,
            max_bulk_bytes=settings.max_bulk_bytes,
            concurrency=settings.bulk_concurrency,
            sleep=self._pause,
        )
        self._dlq = DeadLetterQueue(producer, suffix=settings.dlq_suffix)
        self._routes = {
            settings.queries_topic: (RecordKind.QUERY, settings.queries_index),
            settings.events_topic: (RecordKind.EVENT, settings.events_index),
        }
        self._counts = {"read": 0, "written": 0, "dead_lettered": 0, "batches": 0, "retries": 0}
        self._started = clock()
        self._last_report = (self._started, 0)
        self._active: tuple[float, float] | None = None  # first batch start, last commit
        self._pending: deque[tuple[_Batch, Future[WriteResult]]] = deque()

    def stop(self) -> None:
        """Finish the current batch, commit it, and return from `run` (safe from a signal)."""
        self._stop.set()

    def _pause(self, seconds: float) -> None:
        """Sleep that `stop()` cuts short."""
        self._stop.wait(seconds)

    def stats(self) -> IngestStats:
        active_s = self._active[1] - self._active[0] if self._active else 0.0
        return IngestStats(
            **self._counts, elapsed_s=self._clock() - self._started, active_s=active_s
        )

    def setup(self) -> None:
        """Create missing topics (with the admin client, if given) and install the templates."""
        admin, s = self._admin, self._settings
        if admin is not None:
            topics = [*self._routes, *(dlq_topic(t, s.dlq_suffix) for t in self._routes)]
            self._retrying(
                "topic creation",
                lambda: ensure_topics(
                    admin, topics, partitions=s.topic_partitions, replication=s.topic_replication
                ),
            )
        self._retrying(
            "template install",
            lambda: install_templates(self._opensearch, s.queries_index, s.events_index, s.index),
        )

    def run(
        self, *, max_idle_s: float | None = None, max_records: int | None = None
    ) -> IngestStats:
        """Consume until `stop()`, `max_idle_s` seconds without records, or `max_records` read.

        Idle time counts only while the group has given this worker partitions.
        """
        self._started = self._clock()
        self._last_report = (self._started, 0)
        try:
            self.setup()
            self._consumer.subscribe(list(self._routes))
            with fewer_gc_pauses(self._settings.gc_threshold):
                self._loop(max_idle_s, max_records)
        except _Abandoned:
            log.warning("stopping with the current batch uncommitted; it will be read again")
        self._report(force=True)
        return self.stats()

    def _loop(self, max_idle_s: float | None, max_records: int | None) -> None:
        """Poll and validate while earlier batches are written; commit each once it is stored.

        Up to IN_FLIGHT batches wait for the store thread, which writes them one after the
        other (so a record id written twice keeps offset order); they are committed in order.
        """
        idle_since = self._clock()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-store") as store:
            try:
                while not self._stop.is_set():
                    limit = self._settings.batch_size
                    if max_records is not None:
                        limit = min(limit, max_records - self._counts["read"])
                        if limit <= 0:
                            break
                    messages = self._retrying("poll", lambda: self._poll(limit))  # noqa: B023
                    if messages:
                        batch = self._prepare(messages)
                        self._pending.append((batch, store.submit(self._store, batch)))
                        idle_since = self._clock()
                    elif not self._consumer.assignment():
                        idle_since = self._clock()  # still joining the group: not idle yet
                    elif max_idle_s is not None and self._clock() - idle_since >= max_idle_s:
                        log.info("nothing to read for %.1f s; exiting", max_idle_s)
                        break
                    # the oldest batches: wait until stored, then commit them
                    self._settle(IN_FLIGHT if messages else 0)
                    self._report()
                self._settle(0)
            except BaseException:
                self._stop.set()  # a write still retrying in the store thread gives up
                for _, future in self._pending:
                    future.cancel()  # batches not started stay unwritten and uncommitted
                raise

    def _poll(self, limit: int) -> list[Any]:
        try:
            polled = self._consumer.poll(
                timeout_ms=self._settings.batch_timeout_ms, max_records=limit
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka poll failed: {exc!r}") from exc
        return [message for records in polled.values() for message in records]

    def _prepare(self, messages: list[Any]) -> _Batch:
        started = self._clock()
        documents, rejected = self._validate(messages)
        self._counts["read"] += len(messages)
        lines = self._writer.encode(documents)  # here, so that the store thread only sends
        return _Batch(messages, documents, lines, rejected, started)

    def _store(self, batch: _Batch) -> WriteResult:
        """Dead letters and bulk write of one batch (in the store thread); no commit here."""
        self._retrying("dead letters", lambda: self._dlq.publish(batch.rejected))
        result = self._retrying("bulk write", lambda: self._writer.write_lines(batch.lines))
        refused = [(letter.document.origin, letter.reason) for letter in result.dead_letters]
        self._retrying("dead letters", lambda: self._dlq.publish(refused))
        return result

    def _settle(self, keep: int) -> None:
        """Commit stored batches, oldest first, until at most `keep` are in flight."""
        while len(self._pending) > keep:
            self._settle_oldest()

    def _settle_oldest(self) -> None:
        """Wait for the oldest batch in flight to be stored, then commit its offsets."""
        batch, future = self._pending.popleft()
        result = future.result()  # re-raises _Abandoned: the batch stays uncommitted
        refused = [(letter.document.origin, letter.reason) for letter in result.dead_letters]
        offsets = self._retrying("offset commit", lambda: self._commit(batch.messages))
        finished = self._clock()
        letters = batch.rejected + refused
        self._observe(batch.messages, batch.documents, letters, offsets, finished - batch.started)
        self._active = (self._active[0] if self._active else batch.started, finished)
        self._counts["written"] += result.written
        self._counts["dead_lettered"] += len(letters)
        self._counts["retries"] += result.retries
        self._counts["batches"] += 1

    def _validate(
        self, messages: list[Any]
    ) -> tuple[list[Document], list[tuple[KafkaRecord, str]]]:
        """Documents to store and (record, reason) to dead-letter; the message is the origin."""
        documents: list[Document] = []
        rejected: list[tuple[KafkaRecord, str]] = []
        routes, max_bytes = self._routes, self._settings.max_record_bytes
        for message in messages:
            kind, index = routes[message.topic]
            record = validate_record(message.value, kind, max_bytes, message.timestamp)
            if isinstance(record, Rejection):
                rejected.append((message, record.reason))
            else:
                documents.append(Document(index, record.record_id, record.source, message))
        return documents, rejected

    def _observe(
        self,
        messages: list[Any],
        documents: list[Document],
        letters: list[tuple[KafkaRecord, str]],
        offsets: dict[TopicPartition, OffsetAndMetadata],
        seconds: float,
    ) -> None:
        m = self._metrics
        m.batch_seconds.observe(seconds)
        m.count(m.read, (message.topic for message in messages))
        m.count(m.dead_lettered, (origin.topic for origin, _ in letters))
        refused = {id(origin) for origin, _ in letters}
        m.count(m.written, (d.origin.topic for d in documents if id(d.origin) not in refused))
        assigned = self._consumer.assignment()
        for partition, committed in offsets.items():
            if partition not in assigned:
                continue  # revoked by a rebalance since the batch was read: its lag is not ours
            try:
                end = self._consumer.highwater(partition)
            except KafkaIllegalStateError:  # revoked between the two calls
                continue
            if end is not None:
                m.lag.labels(partition.topic, str(partition.partition)).set(
                    max(0, end - committed.offset)
                )

    def _commit(self, messages: list[Any]) -> dict[TopicPartition, OffsetAndMetadata]:
        last: dict[tuple[str, int], int] = {}
        for message in messages:
            where = (message.topic, message.partition)
            if last.get(where, -1) < message.offset:
                last[where] = message.offset
        offsets = {
            TopicPartition(*where): OffsetAndMetadata(offset + 1, "", -1)
            for where, offset in last.items()
        }
        try:
            self._consumer.commit(offsets=offsets)
        except CommitFailedError as exc:
            # The group moved these partitions to another worker, which re-reads them from the
            # last commit; the records are already stored under their ids, so nothing doubles.
            log.warning(
                "offset commit refused after a rebalance (%s); records will be re-read", exc
            )
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka did not commit offsets: {exc!r}") from exc
        return offsets

    def _retrying(self, action: str, step: Callable[[], T]) -> T:
        """Run `step` until it succeeds, backing off on RetryableError; give up only on stop()."""
        attempt = 0
        while True:
            try:
                return step()
            except RetryableError as exc:
                if self._stop.is_set():
                    raise _Abandoned() from exc
                attempt += 1
                wait = backoff_s(
                    attempt, self._settings.initial_backoff_s, self._settings.max_backoff_s
                )
                log.warning("%s failed (%s); retry %d in %.1f s", action, exc, attempt, wait)
                self._counts["retries"] += 1
                self._metrics.retries.inc()
                self._stop.wait(wait)

    def _report(self, *, force: bool = False) -> None:
        now = self._clock()
        since, read_then = self._last_report
        if not force and now - since < self._settings.progress_interval_s:
            return
        stats = self.stats()
        rate = (stats.read - read_then) / (now - since) if now > since else 0.0
        self._metrics.rate.set(rate)
        log.info(
            "ingest: %d read, %d written, %d dead-lettered, %d batches, %d retries; "
            "%.0f records/s now, %.0f records/s overall",
            stats.read,
            stats.written,
            stats.dead_lettered,
            stats.batches,
            stats.retries,
            rate,
            stats.records_per_s,
        )
        self._last_report = (now, stats.read)


@contextmanager
def handle_signals(worker: IngestWorker) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT ask `worker` to stop after its current batch."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: worker.stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
