"""`clicktune tuner run`: the tuner worker (trigger, fine-tuning tasks, lease, scheduler)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer

from clicktune.cli.common import fail, print_json, settings_of

if TYPE_CHECKING:
    from clicktune.config import Settings
    from tuner.worker.scheduler import TunerWorker

app = typer.Typer(help="The tuner worker (scheduler, fine-tuning tasks).", no_args_is_help=True)


@app.command("run")
def run(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="one trigger check and at most one task, then exit")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (--once)")] = False,
) -> None:
    """Run the worker: queue a fine-tuning task when enough new sessions have built up and run
    tasks (also those created through POST /api/v1/fine-tuning/task) one at a time.

    A second worker stands by behind a lease and takes over when the first one dies; a task
    left in any stage by a dead worker is resumed or failed with the reason.
    """
    from serving.errors import ServingError
    from tuner.errors import TunerError
    from tuner.worker.scheduler import run_scheduler

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for chatty in ("opensearch", "urllib3", "kafka"):  # every request (lease heartbeats) at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    settings = settings_of(ctx)
    try:
        worker = build_worker(settings)
        if not once:
            run_scheduler(worker, settings.home / "tuner" / "jobs.sqlite")
            return
        try:
            answer = worker.tick()
        finally:
            worker.lease.release()
    except (TunerError, ServingError) as exc:
        fail(str(exc))
    if as_json:
        print_json(answer)
        return
    _echo(answer)


def build_worker(settings: Settings) -> TunerWorker:
    """The worker's composition root: task store, lease, trigger counter, stage work."""
    from datetime import timedelta
    from functools import partial

    from clicktune.cli.index import engine_reindexer
    from clicktune.cli.state import experiment_store, reindex_checkpoints
    from clicktune.cli.train import _iteration_context
    from clicktune.clients import model_registry, opensearch_client
    from serving.rollout.arm_health import OpenSearchArmHealthStore
    from serving.state.tasks import OpenSearchTaskStore
    from tuner.worker.lock import Lease
    from tuner.worker.runner import TaskRunner
    from tuner.worker.scheduler import TunerWorker, worker_id
    from tuner.worker.stages import LoopStages
    from tuner.worker.trigger import OpenSearchSessionCounter

    worker_settings = settings.tuner.worker
    client = opensearch_client(settings.opensearch)
    replicas = settings.opensearch.internal_replicas
    store = OpenSearchTaskStore(client, worker_settings.tasks_index, replicas)
    store.ensure_index()
    me = worker_id()
    lease_index = f"{worker_settings.tasks_index}-lease"
    _create_lease_index(client, lease_index, replicas)
    lease = Lease(client, lease_index, me, worker_settings.lease_s)
    context = _iteration_context(settings, settings.tuner, lambda m: logging.info("%s", m))
    stages = LoopStages(
        context=context,
        settings=settings.tuner,
        registry=model_registry(settings),
        doc_index=context.documents,  # type: ignore[arg-type]
        checkpoints=reindex_checkpoints(settings, client),
        reindexers=partial(engine_reindexer, settings, progress=False),
        experiments=experiment_store(settings, client),
        ab_settings=settings.serving.ab,
        client=client,
        ubi_indexes=(settings.ingest.queries_index, settings.ingest.events_index),
        publish=_publisher(settings),
        arm_health=OpenSearchArmHealthStore(client, settings.serving.ab.health_index, replicas),
    )

    def runner_for(fence: Any) -> TaskRunner:
        return TaskRunner(store, stages.fenced(fence), worker_settings, me, fence)

    return TunerWorker(
        store,
        lease,
        context.store,
        OpenSearchSessionCounter(client, settings.ingest.queries_index),
        runner_for,
        worker_settings,
        grace=timedelta(seconds=settings.tuner.batches.grace_s),
    )


def _create_lease_index(client: Any, index: str, replicas: int | str) -> None:
    """The lease's index with its replicas (the lease itself would let it be auto-created)."""
    from opensearchpy.exceptions import OpenSearchException

    from ingest.index_layout import create_internal_index
    from serving.state.tasks import TaskError

    try:
        create_internal_index(client, index, replicas)
    except OpenSearchException as exc:
        raise TaskError(f"cannot create the lease index {index!r}: {exc}") from exc


def _publisher(settings: Settings) -> Any:
    """Control-topic announcements of a promotion (replicas also poll the registry)."""
    from clicktune.cli.models import _rollout

    return _rollout(settings, progress=False).publish


def _echo(answer: dict[str, Any]) -> None:
    if answer.get("standby"):
        typer.echo(f"standing by: the lease is held by {answer['lease'].get('owner')}")
        return
    if "trigger" in answer:
        typer.echo(f"trigger: {answer['trigger']['reason']}")
    if answer.get("queued"):
        typer.echo(f"queued task {answer['queued']}")
    for task in answer.get("tasks", []):
        typer.echo(
            f"task {task['id']}: {task['status']} ({task['stage']}), version {task['version']}"
            + (f": {task['reason']}" if task.get("reason") else "")
        )
    if not answer.get("tasks"):
        typer.echo("no task to run")
