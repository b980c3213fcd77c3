"""`clicktune ingest`: the Kafka -> OpenSearch worker for UBI records."""

from __future__ import annotations

import typer

from clicktune.cli.common import planned

app = typer.Typer(help="Ingest UBI queries and events from Kafka into OpenSearch.",
                  no_args_is_help=True)


@app.command()
def run() -> None:
    """Consume the UBI topics and store every valid record once; bad ones go to <topic>.dlq."""
    planned("ingest run", 4)


@app.command()
def status() -> None:
    """Consumer lag, records/s and dead-letter counts."""
    planned("ingest status", 4)
