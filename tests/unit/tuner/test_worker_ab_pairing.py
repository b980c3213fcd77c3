"""The worker's online test of a query candidate searches the live index only when the
candidate's document model built it; otherwise no experiment starts and the task fails with the
pairing named."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.errors import PairingError
from serving.models.registry import LocalRegistry
from serving.rollout.ab import ExperimentStore
from tests.unit.serving.index_fakes import FakeDocumentIndex
from tests.unit.serving.test_serving_rollout_query import model_dir
from tuner.worker.stages import LoopStages


def _stages(tmp_path: Path, live_built_by: str) -> LoopStages:
    registry = LocalRegistry(tmp_path / "models")
    for version, document_model in [("v1", None), ("v2", None), ("q1", "v1")]:
        registry.add(model_dir(tmp_path, version, document_model), version)
    registry.set_alias("production", live_built_by)
    docs = FakeDocumentIndex()
    docs.build(live_built_by, live=True)
    return LoopStages(
        context=None,  # type: ignore[arg-type]
        settings=None,  # type: ignore[arg-type]
        registry=registry,
        doc_index=docs,  # type: ignore[arg-type]
        checkpoints=tmp_path,
        reindexers=None,  # type: ignore[arg-type]
        experiments=ExperimentStore(tmp_path / "models"),
        ab_settings=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        ubi_indexes=("q", "e"),
    )


def test_a_query_candidate_is_tested_over_the_live_index_its_document_model_built(
    tmp_path: Path,
) -> None:
    stages = _stages(tmp_path, live_built_by="v1")
    stages.start_ab("q1", 0.5, "interleave")
    experiment = stages.experiments.load()
    assert experiment is not None
    assert (experiment.candidate.model_version, experiment.candidate.index_alias) == ("q1", "docs")


def test_a_query_candidate_over_another_model_s_index_starts_no_experiment(
    tmp_path: Path,
) -> None:
    stages = _stages(tmp_path, live_built_by="v2")
    with pytest.raises(PairingError, match="query model 'q1' over document model 'v1'.*'v2'"):
        stages.start_ab("q1", 0.5, "interleave")
    assert stages.experiments.load() is None
