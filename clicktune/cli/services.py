"""`clicktune services`: the local OpenSearch and Kafka on loopback."""

from __future__ import annotations

import typer

from clicktune.cli.common import planned

app = typer.Typer(help="Run OpenSearch (k-NN, ml-commons, neural-search) and Kafka locally.",
                  no_args_is_help=True)


@app.command()
def up() -> None:
    """Fetch (cached), configure and start OpenSearch and Kafka; wait until both are healthy."""
    planned("services up", 3)
