"""`clicktune ingest`: the Kafka -> OpenSearch worker for UBI records (the composition root)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated, Any

import typer

from clicktune.cli.common import fail, print_json, settings_of
from clicktune.clients import kafka_options, opensearch_client
from clicktune.config import Settings
from ingest.dlq import dlq_topic
from ingest.errors import IngestError
from ingest.metrics import IngestMetrics, MetricsSnapshot, parse_metrics
from ingest.status import IngestStatus, committed_rate, ingest_status, with_rate
from ingest.worker import IngestWorker, handle_signals

app = typer.Typer(
    help="Ingest UBI queries and events from Kafka into OpenSearch.", no_args_is_help=True
)


@contextmanager
def build_worker(
    settings: Settings, metrics: IngestMetrics | None = None
) -> Iterator[IngestWorker]:
    """An IngestWorker wired to the configured Kafka and OpenSearch; clients close on exit."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    options = kafka_options(settings.kafka)
    with ExitStack() as stack:
        consumer = KafkaConsumer(
            **options,
            group_id=settings.ingest.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.ingest.session_timeout_ms,
            heartbeat_interval_ms=settings.ingest.heartbeat_interval_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        stack.callback(consumer.close, autocommit=False)
        producer = KafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=20)
        stack.callback(producer.close)
        admin = KafkaAdminClient(**options)
        stack.callback(admin.close)
        # one pooled connection per concurrent bulk request, plus one for everything else
        client = opensearch_client(
            settings.opensearch, pool_maxsize=settings.ingest.bulk_concurrency + 1
        )
        stack.callback(client.close)
        yield IngestWorker(
            consumer, producer, client, settings.ingest, admin=admin, metrics=metrics
        )


@contextmanager
def _offset_reader(settings: Settings) -> Iterator[Any]:
    from kafka import KafkaConsumer

    reader = KafkaConsumer(
        **kafka_options(settings.kafka),
        group_id=settings.ingest.group_id,
        enable_auto_commit=False,
    )
    try:
        yield reader
    finally:
        reader.close(autocommit=False)


def read_status(
    settings: Settings, *, sample_s: float = 0.0, metrics_url: str | None = None
) -> IngestStatus:
    """Consumer-group lag per partition and DLQ sizes for the configured topics.

    With `metrics_url`, records/s comes from a running worker's `/metrics`; when nothing answers
    there and `sample_s` > 0, from the committed offsets read `sample_s` seconds apart.
    """
    s = settings.ingest
    topics = [s.queries_topic, s.events_topic]
    with _offset_reader(settings) as reader:
        report = ingest_status(
            reader, s.group_id, topics, [dlq_topic(t, s.dlq_suffix) for t in topics]
        )
        snapshot = scrape_metrics(metrics_url) if metrics_url else None
        if snapshot is not None:
            return with_rate(report, snapshot.records_per_s, "metrics")
        if sample_s > 0:
            return with_rate(report, committed_rate(reader, topics, sample_s), "offsets")
    return report


def scrape_metrics(url: str, timeout_s: float = 2.0) -> MetricsSnapshot | None:
    """The worker's metrics at `url`, or None when no worker answers there."""
    import httpx

    try:
        answer = httpx.get(url, timeout=timeout_s)
        answer.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_metrics(answer.text)


def _metrics_url(settings: Settings) -> str | None:
    s = settings.ingest
    return f"http://{s.metrics_host}:{s.metrics_port}/metrics" if s.metrics_port else None


@app.command()
def run(
    ctx: typer.Context,
    idle_exit: Annotated[
        float | None,
        typer.Option("--idle-exit", min=0.1, help="exit after this many seconds with no records"),
    ] = None,
    max_records: Annotated[
        int | None, typer.Option("--max-records", min=1, help="exit after reading this many")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", min=0, help="serve /metrics here; 0 = off (ingest.metrics_port)"
        ),
    ] = None,
) -> None:
    """Consume the UBI topics and store every valid record once; bad ones go to <topic>.dlq."""
    settings = settings_of(ctx)
    port = settings.ingest.metrics_port if metrics_port is None else metrics_port
    metrics = IngestMetrics()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    try:
        if port:
            metrics.serve(port, settings.ingest.metrics_host)
        with build_worker(settings, metrics) as worker, handle_signals(worker):
            stats = worker.run(max_idle_s=idle_exit, max_records=max_records)
    except IngestError as exc:
        fail(str(exc))
    typer.echo(
        f"ingested {stats.read} records: {stats.written} written, "
        f"{stats.dead_lettered} dead-lettered, {stats.retries} retries, "
        f"{stats.records_per_s:.0f} records/s"
    )


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object on stdout")] = False,
    sample_s: Annotated[
        float, typer.Option("--sample-s", min=0, help="records/s from offsets read this far apart")
    ] = 2.0,
    metrics_url: Annotated[
        str | None,
        typer.Option("--metrics-url", help="a worker's /metrics (default: ingest.metrics_port)"),
    ] = None,
) -> None:
    """Consumer-group lag per partition, records/s and dead-letter counts."""
    settings = settings_of(ctx)
    try:
        report = read_status(
            settings, sample_s=sample_s, metrics_url=metrics_url or _metrics_url(settings)
        )
    except IngestError as exc:
        fail(str(exc))
    if as_json:
        print_json(report.to_dict())
        return
    rate = "-" if report.records_per_s is None else f"{report.records_per_s:.0f}"
    typer.echo(
        f"group {report.group_id}: total lag {report.total_lag}, "
        f"{rate} records/s (from {report.rate_source})"
    )
    for p in report.partitions:
        committed = "-" if p.committed is None else p.committed
        typer.echo(f"  {p.topic}[{p.partition}] committed={committed} end={p.end} lag={p.lag}")
    for topic, count in report.dlq_records.items():
        typer.echo(f"  {topic}: {count} dead letters")
