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
from ingest.status import IngestStatus, ingest_status
from ingest.worker import IngestWorker, handle_signals

app = typer.Typer(
    help="Ingest UBI queries and events from Kafka into OpenSearch.", no_args_is_help=True
)


@contextmanager
def build_worker(settings: Settings) -> Iterator[IngestWorker]:
    """An IngestWorker wired to the configured Kafka and OpenSearch; clients close on exit."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    options = kafka_options(settings.kafka)
    with ExitStack() as stack:
        consumer = KafkaConsumer(
            **options,
            group_id=settings.ingest.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        stack.callback(consumer.close, autocommit=False)
        producer = KafkaProducer(**options, acks="all", enable_idempotence=True, linger_ms=20)
        stack.callback(producer.close)
        admin = KafkaAdminClient(**options)
        stack.callback(admin.close)
        client = opensearch_client(settings.opensearch)
        stack.callback(client.close)
        yield IngestWorker(consumer, producer, client, settings.ingest, admin=admin)


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


def read_status(settings: Settings) -> IngestStatus:
    """Consumer-group lag per partition and DLQ sizes for the configured topics."""
    s = settings.ingest
    topics = [s.queries_topic, s.events_topic]
    with _offset_reader(settings) as reader:
        return ingest_status(
            reader, s.group_id, topics, [dlq_topic(t, s.dlq_suffix) for t in topics]
        )


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
) -> None:
    """Consume the UBI topics and store every valid record once; bad ones go to <topic>.dlq."""
    settings = settings_of(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("opensearch").setLevel(logging.WARNING)
    try:
        with build_worker(settings) as worker, handle_signals(worker):
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
) -> None:
    """Consumer-group lag per partition (committed vs end offsets) and dead-letter counts."""
    try:
        report = read_status(settings_of(ctx))
    except IngestError as exc:
        fail(str(exc))
    if as_json:
        print_json(report.to_dict())
        return
    typer.echo(f"group {report.group_id}: total lag {report.total_lag}")
    for p in report.partitions:
        committed = "-" if p.committed is None else p.committed
        typer.echo(f"  {p.topic}[{p.partition}] committed={committed} end={p.end} lag={p.lag}")
    for topic, count in report.dlq_records.items():
        typer.echo(f"  {topic}: {count} dead letters")
