"""`clicktune serve`: the embedding and search HTTP service."""

from __future__ import annotations

from typing import Annotated

import typer

from clicktune.cli.common import fail, settings_of
from clicktune.cli.index import load_encoder
from clicktune.clients import kafka_options, opensearch_client
from serving.app import create_app
from serving.query_log import KafkaQueryLog
from serving.slot import ModelSlot
from serving.vector_index import DocumentIndex


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="bind address (default: serving.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: serving.port)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model version or alias")] = None,
) -> None:
    """Serve /v1/embeddings, /embed and /v1/search on the live model."""
    import uvicorn
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    settings = settings_of(ctx)
    serving = settings.serving
    encoder = load_encoder(settings, model)
    doc_index = DocumentIndex(opensearch_client(settings.opensearch), serving.index)
    try:
        producer = KafkaProducer(**kafka_options(settings.kafka), acks="all", linger_ms=5)
    except KafkaError as exc:
        fail(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}")
    query_log = KafkaQueryLog(producer, settings.ingest.queries_topic, serving.query_log_timeout_s)
    app = create_app(ModelSlot(encoder), doc_index, query_log, serving)
    typer.echo(
        f"serving model {encoder.version!r} (dimension {encoder.dimension}) "
        f"on http://{host or serving.host}:{port or serving.port}",
        err=True,
    )
    try:
        uvicorn.run(app, host=host or serving.host, port=port or serving.port, log_level="info")
    finally:
        producer.close(timeout=5)
