"""`serving.state.backend` picks where the A/B experiment, reindex checkpoints and the tuner's
batches live; a bad name or an OpenSearch that does not answer fails naming the value and the
rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opensearchpy import OpenSearch

from clicktune.cli.state import batch_store, experiment_store, reindex_checkpoints
from clicktune.config import ConfigError, Settings, load_settings
from serving.errors import ExperimentError, ReindexError
from serving.index.reindex_checkpoints import OpenSearchCheckpointStore
from serving.rollout.ab import ExperimentStore
from serving.rollout.experiment_store import OpenSearchExperimentStore
from serving.state.documents import Stored
from tuner.batch_store import OpenSearchBatchStore
from tuner.batches import BatchStore
from tuner.errors import BatchStoreError

OPENSEARCH_STATE = {"state": {"backend": "opensearch", "experiments_index": "exp-x"}}


def _settings(**sections: Any) -> Settings:
    return Settings(**sections)


def test_the_default_keeps_both_in_files_under_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    store = experiment_store(settings)
    assert isinstance(store, ExperimentStore) and store.path == tmp_path / "models/experiment.json"
    assert reindex_checkpoints(settings) == tmp_path / "reindex"
    batches = batch_store(settings)
    assert isinstance(batches, BatchStore) and batches.root == tmp_path / "batches"


def test_opensearch_keeps_one_document_per_alias_in_the_configured_indexes(tmp_path: Path) -> None:
    settings = _settings(
        home=tmp_path,
        opensearch={"internal_replicas": 2},
        serving={"index": {"alias": "shop"}, **OPENSEARCH_STATE},
    )
    client = OpenSearch()  # nothing is sent until a store is used
    experiments = experiment_store(settings, client)
    assert isinstance(experiments, OpenSearchExperimentStore)
    assert (experiments.documents.index, experiments.scope) == ("exp-x", "shop")
    assert experiments.documents.replicas == 2
    factory = reindex_checkpoints(settings, client)
    assert not isinstance(factory, Path)
    checkpoints = factory("shop_next")
    assert isinstance(checkpoints, OpenSearchCheckpointStore)
    assert checkpoints.documents.index == "clicktune-reindex-checkpoints"
    assert checkpoints.doc_id == "reindex:shop_next"
    batches = batch_store(settings, client)
    assert isinstance(batches, OpenSearchBatchStore)
    assert (batches.documents.index, batches.scope) == ("clicktune-batches", "shop")
    assert batches.documents.replicas == 2


def test_an_unknown_backend_is_refused_naming_the_value_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLICKTUNE_SERVING__STATE__BACKEND", "redis")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "state.backend" in message and "'redis'" in message
    assert "'local' or 'opensearch'" in message


def test_an_unreachable_opensearch_names_the_address_and_the_setting(tmp_path: Path) -> None:
    settings = _settings(
        home=tmp_path, opensearch={"url": "http://127.0.0.1:9"}, serving=OPENSEARCH_STATE
    )
    client = OpenSearch(hosts=[settings.opensearch.url], max_retries=0, timeout=2)
    with pytest.raises(ExperimentError) as experiment:
        experiment_store(settings, client).load()
    factory = reindex_checkpoints(settings, client)
    assert not isinstance(factory, Path)
    with pytest.raises(ReindexError) as checkpoint:
        factory("docs").load()
    with pytest.raises(BatchStoreError) as batches:
        batch_store(settings, client).list()
    for error in (experiment.value, checkpoint.value, batches.value):
        assert "127.0.0.1:9" in str(error) and "serving.state.backend=opensearch" in str(error)


class CountingDocuments:
    """Answers `get` with the running experiment document, counting the reads."""

    where = "fake"

    def __init__(self, body: dict[str, Any] | None) -> None:
        self.body, self.reads = body, 0

    def get(self, doc_id: str) -> Stored | None:
        self.reads += 1
        return None if self.body is None else Stored(self.body, (1, 1))


def test_a_replica_reads_opensearch_at_most_once_per_cache_time() -> None:
    now = [100.0]
    documents = CountingDocuments(None)
    store = OpenSearchExperimentStore(documents, "docs", 1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    for _ in range(50):  # fifty searches inside one second
        assert store.load() is None
    assert documents.reads == 1
    now[0] += 1.0
    store.load()
    assert documents.reads == 2
