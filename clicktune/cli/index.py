"""`clicktune index` and `clicktune reindex`: the document index behind the alias."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clicktune.cli.common import fail, print_json, settings_of
from serving.config import ReindexEngine

if TYPE_CHECKING:  # the serving stack (onnxruntime, opensearch-py) loads only when used
    from clicktune.config import Settings
    from serving.encoders.encoder import ServableEncoder
    from serving.index.indexer import IndexReport
    from serving.index.reindex import Reindexer
    from serving.index.vector_index import DocumentIndex
    from serving.models.registries import ModelRegistry


def load_encoder(settings: Settings, ref: str | None) -> ServableEncoder:
    """The encoder of registry model `ref` (default: the configured alias, `production`), text,
    CLIP or a query model with its document model, as its `clicktune.json` says."""
    from clicktune.clients import model_registry
    from serving.errors import ServingError

    registry = model_registry(settings)
    try:
        if not registry.list():
            fail(f"no model registered in {registry.location}; run `clicktune models import` first")
        return model_encoder(settings, ref or settings.serving.model_version, registry)
    except ServingError as exc:
        fail(str(exc))


def model_encoder(
    settings: Settings, ref: str, registry: ModelRegistry | None = None
) -> ServableEncoder:
    """`load_encoder` raising `ServingError`, for callers that handle it (the tuner worker)."""
    from clicktune.clients import model_registry
    from serving.encoders.model_loader import load_model_dir

    registry = registry or model_registry(settings)
    return load_model_dir(registry.get(ref).path, settings.serving.encoder, registry)


def index(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="dataset dir with corpus.jsonl, or a .jsonl file")],
    model: Annotated[str | None, typer.Option("--model", help="model version or alias")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    trust_local_images: Annotated[
        bool,
        typer.Option(
            "--trust-local-images",
            help="read image fields that are local paths or file:// URLs (a dataset you trust; "
            "the API never reads them)",
        ),
    ] = False,
) -> None:
    """Embed a corpus (DATASET_DIR or JSONL) into a new index and move the alias onto it."""
    from clicktune.clients import opensearch_client
    from serving.errors import ServingError
    from serving.index.corpus import corpus_file, read_corpus
    from serving.index.doc_images import ImageReader
    from serving.index.indexer import index_corpus
    from serving.index.vector_index import DocumentIndex

    settings = settings_of(ctx)
    encoder = load_encoder(settings, model)
    doc_index = DocumentIndex(opensearch_client(settings.opensearch), settings.serving.index)
    try:
        total = _count_lines(corpus_file(path))
        report = index_corpus(
            read_corpus(path),
            encoder,
            doc_index,
            batch_size=settings.serving.encoder.batch_size,
            progress=not as_json,
            total=total,
            images=ImageReader(settings.serving.index.images, local_paths=trust_local_images),
        )
    except ServingError as exc:
        fail(str(exc))
    if as_json:
        print_json(report.as_dict())
    else:
        typer.echo(
            f"indexed {report.docs} documents into {report.index} in {report.seconds:.1f} s "
            f"({report.docs / max(report.seconds, 1e-9):.0f} docs/s); alias {report.alias!r} "
            f"now points at it" + (f" (was {report.previous})" if report.previous else "")
        )


def _count_lines(file: Path) -> int:
    with file.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


def reindex(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", help="model version (or alias) to embed with")],
    resume: Annotated[
        bool, typer.Option("--resume", help="finish an interrupted reindex from its checkpoint")
    ] = False,
    abandon: Annotated[
        bool, typer.Option("--abandon", help="drop an interrupted reindex and its partial index")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    engine: Annotated[
        ReindexEngine | None,
        typer.Option(
            "--engine",
            help="local: this process (default, serving.reindex.engine); ray: point-in-time "
            "slices over a Ray actor pool (needs the extra: pip install clicktune\\[scale])",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="an existing Ray cluster: host:port (GCS) or ray://host:port; default: start "
            "a local one",
        ),
    ] = None,
    actors: Annotated[
        int | None, typer.Option("--actors", min=1, help="Ray actors encoding at once")
    ] = None,
) -> None:
    """Re-embed the live index with another model version and swap the alias atomically."""
    from serving.errors import ServingError

    settings = with_engine(settings_of(ctx), engine, ray_address, actors)
    try:
        if abandon:
            from clicktune.cli.state import reindex_checkpoints
            from serving.index.reindex import abandon as abandon_reindex

            doc_index = _doc_index(settings)
            checkpoints = reindex_checkpoints(settings, doc_index.client)
            dropped = abandon_reindex(doc_index, checkpoints)
            typer.echo(f"abandoned the interrupted reindex; deleted {dropped}")
            return
        report = run_reindex(settings, model, resume=resume, progress=not as_json)
    except ServingError as exc:
        fail(str(exc))
    if as_json:
        print_json(report.as_dict())
        return
    kept = f" (was {report.previous}, kept for rollback)" if report.previous else ""
    typer.echo(
        f"reindexed {report.docs} documents into {report.index} in {report.seconds:.1f} s "
        f"({report.docs / max(report.seconds, 1e-9):.0f} docs/s); alias {report.alias!r} now "
        f"points at it{kept}"
    )


def run_reindex(
    settings: Settings,
    model: str,
    *,
    resume: bool = False,
    progress: bool = True,
    alias: str | None = None,
) -> IndexReport:
    """Reindex with registry model `model` onto `alias` (default: the live alias), on the
    engine of `serving.reindex.engine`."""
    with engine_reindexer(settings, model, progress=progress, alias=alias) as reindexer:
        return reindexer.run(resume=resume)


@contextlib.contextmanager
def engine_reindexer(
    settings: Settings,
    model: str,
    *,
    progress: bool = True,
    alias: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Iterator[Reindexer]:
    """A `Reindexer` for registry model `model` onto `alias` on the engine of
    `serving.reindex.engine`: local, or Ray (the cluster joined while this is open). What
    `clicktune reindex`, `models promote`, `ab start` and the tuner worker reindex through."""
    from clicktune.cli.state import reindex_checkpoints
    from serving.index.reindex import Reindexer

    doc_index = _doc_index(settings)
    with contextlib.ExitStack() as stack:
        ray = None
        if settings.serving.reindex.engine is ReindexEngine.ray:
            from serving.index.ray_cluster import ray_cluster

            # first, so an unreachable address fails before a model loads
            ray = stack.enter_context(ray_cluster(settings.serving.reindex.ray))
        encoder = model_encoder(settings, model)
        copier = None
        if ray is not None:
            from clicktune.cli.reindex_ray import ray_copier

            copier = ray_copier(settings, ray, model, encoder, doc_index.client, progress=progress)
        yield Reindexer(
            doc_index,
            encoder,
            reindex_checkpoints(settings, doc_index.client),
            batch_size=settings.serving.index.bulk_batch_size,
            progress=progress,
            alias=alias,
            on_progress=on_progress,
            copier=copier,
        )


def with_engine(
    settings: Settings,
    engine: ReindexEngine | None,
    ray_address: str | None = None,
    actors: int | None = None,
) -> Settings:
    """`settings` with the command line's reindex engine options over `serving.reindex`."""
    reindex = settings.serving.reindex
    ray = reindex.ray.model_copy(
        update={
            k: v for k, v in {"address": ray_address, "actors": actors}.items() if v is not None
        }
    )
    reindex = reindex.model_copy(update={"engine": engine or reindex.engine, "ray": ray})
    serving = settings.serving.model_copy(update={"reindex": reindex})
    return settings.model_copy(update={"serving": serving})


def _doc_index(settings: Settings) -> DocumentIndex:
    from clicktune.clients import opensearch_client
    from serving.index.vector_index import DocumentIndex

    return DocumentIndex(opensearch_client(settings.opensearch), settings.serving.index)
