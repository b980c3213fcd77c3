"""Prometheus metrics of the ingest worker, and reading them back for `clicktune ingest status`.

Metric names (all prefixed `clicktune_ingest_`):

    records_read_total{topic}           records polled from Kafka
    records_written_total{topic}        records OpenSearch acknowledged
    records_dead_lettered_total{topic}  records put on `<topic>.dlq`
    retries_total                       backoffs after OpenSearch or Kafka failures
    batch_seconds                       histogram: poll-to-commit time of one batch
    consumer_lag{topic,partition}       log end offset - committed offset, after each commit
    records_per_second                  read rate over the last progress interval

Each `IngestMetrics` has its own registry, so tests and several workers in one process never
share counters; `serve(port)` exposes it on `/metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["IngestMetrics", "MetricsSnapshot", "parse_metrics"]

PREFIX = "clicktune_ingest"
BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class IngestMetrics:
    """The worker's counters, histogram and gauges in one private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.read = Counter(f"{PREFIX}_records_read", "Records polled", ["topic"], registry=r)
        self.written = Counter(
            f"{PREFIX}_records_written", "Records stored in OpenSearch", ["topic"], registry=r
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_records_dead_lettered", "Records sent to <topic>.dlq", ["topic"], registry=r
        )
        self.retries = Counter(f"{PREFIX}_retries", "Backoffs after failures", registry=r)
        self.batch_seconds = Histogram(
            f"{PREFIX}_batch_seconds", "Poll-to-commit time of a batch", buckets=BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.lag = Gauge(
            f"{PREFIX}_consumer_lag", "End offset - committed offset", ["topic", "partition"],
            registry=r,
        )  # fmt: skip
        self.rate = Gauge(f"{PREFIX}_records_per_second", "Recent read rate", registry=r)

    def count(self, counter: Counter, topics: Iterable[str]) -> None:
        """Add one to `counter{topic}` per item of `topics`."""
        totals: dict[str, int] = {}
        for topic in topics:
            totals[topic] = totals.get(topic, 0) + 1
        for topic, n in totals.items():
            counter.labels(topic=topic).inc(n)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose `/metrics` on host:port from a daemon thread."""
        start_http_server(port, addr=host, registry=self.registry)


@dataclass(frozen=True)
class MetricsSnapshot:
    """What `clicktune ingest status` reads from a running worker's `/metrics`."""

    records_per_s: float
    read: dict[str, float] = field(default_factory=dict)
    written: dict[str, float] = field(default_factory=dict)
    dead_lettered: dict[str, float] = field(default_factory=dict)
    lag: dict[str, float] = field(default_factory=dict)  # "topic[partition]" -> lag


def parse_metrics(text: str) -> MetricsSnapshot:
    """Read the worker's metrics out of the Prometheus text format."""
    rate = 0.0
    by_topic: dict[str, dict[str, float]] = {"read": {}, "written": {}, "dead_lettered": {}}
    lag: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == f"{PREFIX}_records_per_second":
                rate = sample.value
            elif name == f"{PREFIX}_consumer_lag":
                lag[f"{labels['topic']}[{labels['partition']}]"] = sample.value
            for kind in by_topic:
                if name == f"{PREFIX}_records_{kind}_total":
                    by_topic[kind][labels["topic"]] = sample.value
    return MetricsSnapshot(
        rate, by_topic["read"], by_topic["written"], by_topic["dead_lettered"], lag
    )
