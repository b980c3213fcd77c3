"""`clicktune ab start` with a query model: its arm searches the live index its document model
built (two query models compare over one index, nothing is reindexed); over another model's
index it is refused naming the pairing."""

from __future__ import annotations

from pathlib import Path

import pytest

import clicktune.cli.index as cli_index
from clicktune.cli.ab import start_experiment
from clicktune.config import Settings
from serving.errors import PairingError
from serving.models.registry import LocalRegistry
from serving.rollout.ab import ExperimentStore
from tests.unit.serving.index_fakes import FakeDocumentIndex
from tests.unit.serving.test_serving_rollout_query import model_dir


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, list[str]]:
    settings = Settings(home=tmp_path)
    registry = LocalRegistry(tmp_path / "models")
    for version, document_model in [("v1", None), ("v2", None), ("q1", "v1"), ("q2", "v1")]:
        registry.add(model_dir(tmp_path, version, document_model), version)
    registry.add(model_dir(tmp_path, "q3", "v2"), "q3")
    registry.set_alias("production", "q1")
    docs = FakeDocumentIndex()
    docs.build("v1", live=True)
    reindexed: list[str] = []
    monkeypatch.setattr(cli_index, "_doc_index", lambda _: docs)
    monkeypatch.setattr(
        cli_index, "run_reindex", lambda _, version, **kw: reindexed.append(version)
    )
    return settings, reindexed


def test_two_query_models_are_compared_over_the_live_index_without_a_reindex(world) -> None:  # type: ignore[no-untyped-def]
    settings, reindexed = world
    experiment = start_experiment(settings, "q2", 0.5, "interleave", progress=False)
    arms = [(a.model_version, a.index_alias) for a in (experiment.control, experiment.candidate)]
    assert arms == [("q1", "docs"), ("q2", "docs")]
    assert reindexed == []


def test_a_query_model_over_another_model_s_index_starts_no_experiment(world) -> None:  # type: ignore[no-untyped-def]
    settings, reindexed = world
    with pytest.raises(PairingError, match="query model 'q3' over document model 'v2'"):
        start_experiment(settings, "q3", 0.5, "split", progress=False)
    assert ExperimentStore(settings.home / "models").load() is None and reindexed == []
