"""The tuner worker with `tuner.train.method: query_adapter` or `query_tower` against the real
OpenSearch: a task trains a query adapter (or a query tower) over the live model's frozen
encoder, registers "query model over document model", and goes live without a reindex (the
document index untouched)."""

from __future__ import annotations

import json

import pytest

from serving.state.tasks import new_task
from tests.integration.worker_world import DOCS, World

pytestmark = pytest.mark.integration


@pytest.mark.slow
@pytest.mark.parametrize("method", ["query_adapter", "query_tower"])
def test_a_query_side_task_goes_live_over_the_same_index_without_a_reindex(
    world: World, method: str
) -> None:
    live_before = world.doc_index.live_index()
    indexes_before = sorted(world.client.indices.get(index=f"tw_{world.unique}_docs*"))
    world.add_sessions(40)
    task, _ = world.store.create(new_task("weighted-infonce"))
    world.run_once(CLICKTUNE_TUNER__TRAIN__METHOD=method)
    final = world.store.get(task.id)
    assert final.status == "done", final.reason
    assert [h["stage"] for h in final.history] == [
        "queued",
        "releasing",
        "training",
        "registered",
        "promoting",
        "done",
    ]
    assert final.metrics["side"] == "query" and final.metrics["reindexed"] is False
    version = world.registry.get(str(final.version))
    assert version.kind == "query" and version.document_model == "base"
    meta = json.loads((version.path / "clicktune.json").read_text())
    assert ("query_tower" in meta) == (method == "query_tower")
    assert world.registry.aliases()["production"] == version.version
    rollout = final.metrics["rollout"]
    assert rollout["reindexed"] is False and rollout["index"] == live_before
    # The document index is untouched: same live index, same indexes, every document still there.
    assert world.doc_index.live_index() == live_before
    assert sorted(world.client.indices.get(index=f"tw_{world.unique}_docs*")) == indexes_before
    assert world.doc_index.refresh(live_before) == DOCS
    world.assert_nothing_half_done()
