"""Wires the `/dashboard` panels of `clicktune serve` to this process's collaborators.

Called only by the serve composition root. The A/B panel reads the UBI indexes with the
server's OpenSearch client and the per-arm health every replica reports to the health index
(this replica's own until the first report lands); the ingest panel reads the
consumer group's offsets the way `clicktune ingest status` does (a short-lived Kafka consumer
per reading, which the page's cache and poll interval keep to one every few seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import APIRouter

    from clicktune.config import Settings
    from serving.encoders.slot import ModelSlot
    from serving.rollout.ab import ArmRouter

__all__ = ["dashboard_router_for"]


def dashboard_router_for(
    settings: Settings,
    slot: ModelSlot,
    client: Any,
    arms: ArmRouter,
    ref: str,
    tasks: Callable[[], dict[str, Any]] | None = None,
) -> APIRouter:
    """The dashboard of the replica serving `ref` (a version, or the alias it follows); `tasks`
    is the task store's provider when there is one (`dashboard_sources.tasks_source(store)`)."""
    from clicktune.clients import model_registry
    from serving.api.dashboard import DashboardSources, dashboard_router
    from serving.api.dashboard_sources import (
        ab_source,
        models_source,
        replica_health,
        training_source,
        uplift_source,
    )
    from serving.rollout.ab_stats import metrics_of
    from serving.rollout.arm_health import OpenSearchArmHealthStore

    registry = model_registry(settings)
    alias = ref if ref in registry.aliases() else "production"  # as `serve` follows it
    ingest, serving = settings.ingest, settings.serving

    def serving_version() -> str | None:
        return slot.current.version if slot.current is not None else None

    def metrics_for(experiment: Any) -> Any:
        return metrics_of(client, experiment, ingest.queries_index, ingest.events_index)

    health_store = OpenSearchArmHealthStore(
        client, serving.ab.health_index, settings.opensearch.internal_replicas
    )
    arm_health = replica_health(health_store, lambda: arms.health)

    sources = DashboardSources(
        models=models_source(registry, alias, serving_version, arms.experiment),
        ab=ab_source(arms.store, metrics_for, serving.ab, health=arm_health),
        uplift=uplift_source(serving.dashboard.reports_dir, registry),
        ingest=_ingest_source(settings),
        training=training_source(registry),
        tasks=tasks,
    )
    return dashboard_router(sources, serving.dashboard)


def _ingest_source(settings: Settings) -> Callable[[], dict[str, Any]]:
    s = settings.ingest
    metrics_url = f"http://{s.metrics_host}:{s.metrics_port}/metrics" if s.metrics_port else None

    def read() -> dict[str, Any]:
        from clicktune.cli.ingest import read_status

        return read_status(settings, metrics_url=metrics_url).to_dict()

    return read
