"""`clicktune opensearch`: make OpenSearch call clicktune (ml-commons connector, pipelines)."""

from __future__ import annotations

import typer

from clicktune.cli.common import planned

app = typer.Typer(
    help="Connect OpenSearch's ml-commons to the clicktune embedding service.", no_args_is_help=True
)


@app.command()
def connect() -> None:
    """Register a remote connector and model, create a text_embedding ingest pipeline."""
    planned("opensearch connect", 6)
