"""`clicktune services`: the local OpenSearch, Kafka and MLflow tracking server on loopback."""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Annotated

import typer

from clicktune.cli.common import fail, print_json, settings_of
from clicktune.services import manager
from clicktune.services.errors import ServicesError

app = typer.Typer(
    help="Run OpenSearch (k-NN, ml-commons, neural-search), Kafka and an MLflow tracking server "
    "locally.",
    no_args_is_help=True,
)


class ServiceName(StrEnum):
    opensearch = "opensearch"
    kafka = "kafka"
    mlflow = "mlflow"


def _quiet_kafka() -> None:
    # kafka-python logs every refused connection; a probe of a stopped broker is not an error.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


@app.command()
def up(
    ctx: typer.Context,
    nodes: Annotated[
        int | None,
        typer.Option(
            "--nodes",
            min=1,
            max=9,
            help="OpenSearch nodes on loopback (services.opensearch_nodes): node n > 1 is a "
            "data node on the ports + n-1. Start a multi-node cluster from a stopped one.",
        ),
    ] = None,
) -> None:
    """Fetch (cached), configure and start OpenSearch, Kafka and MLflow; wait until all are
    healthy."""
    settings = settings_of(ctx)
    if nodes is not None:
        services = settings.services.model_copy(update={"opensearch_nodes": nodes})
        settings = settings.model_copy(update={"services": services})
    _quiet_kafka()
    try:
        manager.up(manager.local_services(settings), typer.echo, settings.services.start_timeout_s)
    except ServicesError as exc:
        fail(str(exc))


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop the OpenSearch, Kafka and MLflow processes that `services up` started, nothing else."""
    _quiet_kafka()
    manager.down(manager.local_services(settings_of(ctx), started_too=True), typer.echo)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Health, version and plugins of the configured OpenSearch, Kafka and MLflow; exit 1 if one
    clicktune needs is not healthy (MLflow only when it is the model registry)."""
    _quiet_kafka()
    settings = settings_of(ctx)
    opensearch, kafka, mlflow = manager.status(settings)
    if as_json:
        print_json(
            {
                "opensearch": opensearch.as_dict(),
                "kafka": kafka.as_dict(),
                "mlflow": mlflow.as_dict(),
            }
        )
    else:
        rows = [
            (
                "opensearch",
                opensearch.url,
                opensearch.healthy,
                f"{opensearch.version} {', '.join(opensearch.plugins)}".strip(),
            ),
            ("kafka", kafka.bootstrap, kafka.healthy, ""),
            ("mlflow", mlflow.url, mlflow.healthy, ""),
        ]
        for name, where, healthy, detail in rows:
            state = "healthy" if healthy else "DOWN"
            typer.echo(f"{name:<11} {state:<8} {where:<28} {detail}".rstrip())
    if not (
        opensearch.healthy
        and kafka.healthy
        and (mlflow.healthy or not manager.needs_mlflow(settings))
    ):
        raise typer.Exit(1)


@app.command()
def logs(
    ctx: typer.Context,
    service: Annotated[ServiceName | None, typer.Argument(help="Only this service.")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="Lines per service.")] = 50,
) -> None:
    """Print the last lines of the local services' logs."""
    for local in manager.local_services(settings_of(ctx), started_too=True):
        if service is not None and not local.name.startswith(service.value):
            continue
        typer.echo(f"==> {local.name} <==")
        for line in local.log_tail(lines) or ["(no log yet: run `clicktune services up`)"]:
            typer.echo(line)
