"""The `clicktune` command: one composition root per subcommand.

Each subcommand lives in its own module and builds exactly what it needs from the settings;
nothing connects to a server or loads a model at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clicktune.cli import (
    ab,
    demo,
    ingest,
    models,
    opensearch,
    serve,
    services,
    train,
    tuner,
)
from clicktune.cli import index as index_cmd
from clicktune.cli.common import State
from clicktune.cli.evaluate import evaluate

app = typer.Typer(
    name="clicktune",
    help="Vector search for OpenSearch that fine-tunes its embedding model from clicks.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML config file (default: $CLICKTUNE_CONFIG or configs/default.yaml)",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    ctx.obj = State(config_path=config)


app.add_typer(services.app, name="services")
app.add_typer(ingest.app, name="ingest")
app.add_typer(tuner.app, name="tuner")
app.command("train")(train.train)
app.command("eval")(evaluate)
app.command("serve")(serve.serve)
app.command("index")(index_cmd.index)
app.command("reindex")(index_cmd.reindex)
app.add_typer(models.app, name="models")
app.add_typer(ab.app, name="ab")
app.add_typer(opensearch.app, name="opensearch")
app.command("demo")(demo.demo)


def main() -> None:
    """Entry point of the `clicktune` console script."""
    app()
