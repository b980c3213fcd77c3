"""Where the composition roots keep the A/B experiment, reindex checkpoints and batches.

`serving.state.backend: local` (the default): files under `$CLICKTUNE_HOME` (`models/`,
`reindex/` and `batches/`), shared across hosts only through a shared volume. `opensearch`:
documents of `serving.state.experiments_index`, `serving.state.checkpoints_index` and
`serving.state.batches_index`, with the replicas of `opensearch.internal_replicas`, reachable
from any host that reaches the cluster.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from serving.config import StateBackend

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

    from clicktune.config import Settings
    from serving.index.reindex_checkpoints import CheckpointStores
    from serving.rollout.ab import Experiments
    from serving.state.documents import OpenSearchDocuments
    from tuner.batches import Batches

__all__ = ["batch_store", "experiment_store", "reindex_checkpoints"]


def experiment_store(settings: Settings, client: OpenSearch | None = None) -> Experiments:
    """The running experiment of the live document alias, where `serving.state` keeps it."""
    from serving.rollout.ab import ExperimentStore

    state = settings.serving.state
    if state.backend is StateBackend.local:
        return ExperimentStore(settings.home / "models")
    from serving.rollout.experiment_store import OpenSearchExperimentStore

    documents = _documents(settings, state.experiments_index, client)
    return OpenSearchExperimentStore(documents, settings.serving.index.alias, state.cache_s)


def reindex_checkpoints(
    settings: Settings, client: OpenSearch | None = None
) -> Path | CheckpointStores:
    """Reindex checkpoints: the folder `<home>/reindex`, or a store per alias in OpenSearch."""
    state = settings.serving.state
    if state.backend is StateBackend.local:
        return settings.home / "reindex"
    from serving.index.reindex_checkpoints import OpenSearchCheckpointStore

    documents = _documents(settings, state.checkpoints_index, client)
    return lambda alias: OpenSearchCheckpointStore(documents, alias)


def batch_store(settings: Settings, client: OpenSearch | None = None) -> Batches:
    """The tuner's released batches: the folder `<home>/batches`, or documents of the live
    document alias in OpenSearch."""
    state = settings.serving.state
    if state.backend is StateBackend.local:
        from tuner.batches import BatchStore

        return BatchStore(settings.home / "batches")
    from tuner.batch_store import OpenSearchBatchStore

    documents = _documents(settings, state.batches_index, client)
    return OpenSearchBatchStore(documents, settings.serving.index.alias)


def _documents(settings: Settings, index: str, client: OpenSearch | None) -> OpenSearchDocuments:
    from clicktune.clients import opensearch_client
    from serving.state.documents import OpenSearchDocuments

    client = client or opensearch_client(settings.opensearch)
    return OpenSearchDocuments(client, index, settings.opensearch.internal_replicas)
