"""`clicktune opensearch`: make OpenSearch call clicktune (ml-commons connector, pipelines)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from clicktune.cli.common import fail, print_json, settings_of
from serving.encoders.input_type import InputType

if TYPE_CHECKING:
    from serving.index.ml_commons import Connection

app = typer.Typer(
    help="Connect OpenSearch's ml-commons to the clicktune embedding service.", no_args_is_help=True
)


@app.command()
def connect(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="the service as OpenSearch reaches it (default: serving.host:port)"
        ),
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option(help="ingest pipeline name (default: serving.ml_commons.pipeline)")
    ] = None,
    field_map: Annotated[
        list[str] | None,
        typer.Option("--field", help="SOURCE=TARGET text field -> vector field (repeatable)"),
    ] = None,
    input_type: Annotated[
        InputType,
        typer.Option(
            "--input-type",
            help="document: the model the ingest pipeline embeds documents with (and the "
            "pipeline); query: the model neural queries name, which embeds with a query model's "
            "query side (no pipeline). A query model needs both",
        ),
    ] = InputType.DOCUMENT,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Register a remote connector and model for one side; for documents, create a
    text_embedding ingest pipeline."""
    from clicktune.clients import opensearch_client
    from serving.errors import ServingError
    from serving.index.ml_commons import connect as connect_ml
    from serving.index.ml_commons import service_dimension

    if input_type is InputType.QUERY and (pipeline or field_map):
        fail(
            "--pipeline and --field set up the ingest pipeline, which embeds documents; "
            "drop them with --input-type query, or connect --input-type document"
        )
    settings = settings_of(ctx)
    serving = settings.serving
    service_url = url or f"http://{serving.host}:{serving.port}"
    options = serving.ml_commons.model_copy()
    if pipeline:
        options.pipeline = pipeline
    if field_map:
        options.field_map = _field_map(field_map)
    try:
        dimension = service_dimension(service_url)
        client = opensearch_client(settings.opensearch)
        result = connect_ml(client, service_url, dimension, options, input_type)
    except ServingError as exc:
        fail(str(exc))
    if as_json:
        print_json(result.as_dict())
    else:
        typer.echo(result.model_id)
        typer.echo(_summary(result, service_url, options.field_map), err=True)
    for index in result.recreate_indexes:
        typer.echo(
            f"warning: index {index!r} holds vectors of another dimension than the live model's "
            f"{dimension}; re-create it (and re-ingest) before writing through {result.pipeline!r}",
            err=True,
        )
    for name in result.recreate_pipelines:
        typer.echo(
            f"warning: ingest pipeline {name!r} names a replaced ml-commons model; re-create it "
            f"with model_id {result.model_id}",
            err=True,
        )


def _summary(result: Connection, service_url: str, field_map: dict[str, str]) -> str:
    connector = f"connector {result.connector_id} -> {service_url}/v1/embeddings"
    if result.input_type is InputType.QUERY:
        return (
            f"{connector} (input_type query); name model_id {result.model_id} in neural queries "
            f"(dimension {result.dimension})"
        )
    return (
        f"{connector}; ingest pipeline {result.pipeline!r} embeds {field_map} "
        f"(dimension {result.dimension})"
    )


def _field_map(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        source, sep, target = pair.partition("=")
        if not sep or not source or not target:
            fail(f"--field {pair!r} must look like SOURCE=TARGET, e.g. text=embedding")
        mapping[source] = target
    return mapping
