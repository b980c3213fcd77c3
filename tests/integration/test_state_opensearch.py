"""The A/B experiment and reindex checkpoints kept in the real OpenSearch
(`serving.state.backend: opensearch`): round trips, another replica or host seeing a change,
and conflicting writes refused. Each test uses its own index and deletes it afterwards."""

from __future__ import annotations

import time
from typing import Any

import pytest

from serving.errors import ExperimentError, ReindexError
from serving.index.reindex_checkpoints import Checkpoint, OpenSearchCheckpointStore
from serving.rollout.ab import CANDIDATE, CONTROL, Arm, Experiment, new_experiment
from serving.rollout.experiment_store import OpenSearchExperimentStore
from serving.state.documents import OpenSearchDocuments, Stored

pytestmark = pytest.mark.integration


@pytest.fixture()
def documents(state_documents: OpenSearchDocuments) -> OpenSearchDocuments:
    return state_documents  # tests/conftest.py: a real index of the test's own


def _experiment(candidate: str = "v2") -> Experiment:
    return new_experiment(
        Arm(CONTROL, "v1", "docs"), Arm(CANDIDATE, candidate, "docs_candidate"), 0.2, "split"
    )


def test_an_experiment_round_trips_and_another_replica_sees_it_within_its_cache_time(
    documents: OpenSearchDocuments,
) -> None:
    tuner = OpenSearchExperimentStore(documents, "docs", cache_s=0)
    replica = OpenSearchExperimentStore(
        OpenSearchDocuments(documents.client, documents.index), "docs", cache_s=0.5
    )
    assert replica.load() is None  # read once, then cached for 0.5 s
    started = _experiment()
    tuner.save(started)
    assert tuner.load() == started
    assert replica.load() is None, "the replica re-read OpenSearch inside its cache time"
    time.sleep(0.6)
    assert replica.load() == started
    assert OpenSearchExperimentStore(documents, "other-alias").load() is None  # its own scope
    assert replica.stop() == started
    time.sleep(0.6)
    assert tuner.load() is None and replica.load() is None
    assert tuner.last_stopped()[0] == started


def test_a_second_start_is_refused_and_a_stop_never_ends_a_newer_experiment(
    documents: OpenSearchDocuments,
) -> None:
    one, two = (OpenSearchExperimentStore(documents, "docs", cache_s=0) for _ in range(2))
    first = _experiment()
    one.save(first)
    with pytest.raises(ExperimentError, match="already running for 'docs'"):
        two.save(_experiment("v3"))
    newer = _experiment("v3")

    class Racing(OpenSearchDocuments):
        """Another operator stops `first` and starts `newer` right after this one read it."""

        def get(self, doc_id: str) -> Stored | None:
            found = super().get(doc_id)
            two.stop()
            two.save(newer)
            return found

    late = OpenSearchExperimentStore(Racing(documents.client, documents.index), "docs", 0)
    with pytest.raises(ExperimentError, match="changed since it was read"):
        late.stop()
    assert one.load() == newer, "the stop ended an experiment started after it looked"


def _checkpoint(**changes: Any) -> Checkpoint:
    fields: dict[str, Any] = {
        "source": "docs__v1__1",
        "target": "docs__v2__1",
        "model_version": "v2",
        "alias": "docs",
        "total": 100,
        **changes,
    }
    return Checkpoint(**fields)


def test_a_checkpoint_saved_on_one_host_is_resumed_on_another_and_the_first_is_fenced_off(
    documents: OpenSearchDocuments,
) -> None:
    here = OpenSearchCheckpointStore(documents, "docs")
    assert here.load() is None
    checkpoint = _checkpoint()
    here.save(checkpoint)
    checkpoint.written, checkpoint.search_after = 40, ["d00039"]
    here.save(checkpoint)
    elsewhere = OpenSearchCheckpointStore(
        OpenSearchDocuments(documents.client, documents.index), "docs"
    )
    resumed = elsewhere.load()
    assert resumed == checkpoint
    assert OpenSearchCheckpointStore(documents, "docs_candidate").load() is None
    assert resumed is not None
    resumed.written = 60
    elsewhere.save(resumed)
    checkpoint.written = 50
    with pytest.raises(ReindexError, match="changed by another process"):
        here.save(checkpoint)  # the first host's stale writer must not move it back
    assert elsewhere.load() == resumed
    elsewhere.clear()
    assert here.load() is None


def test_a_first_save_only_creates(documents: OpenSearchDocuments) -> None:
    OpenSearchCheckpointStore(documents, "docs").save(_checkpoint())
    with pytest.raises(ReindexError, match="changed by another process"):
        OpenSearchCheckpointStore(documents, "docs").save(_checkpoint(target="docs__v2__2"))
