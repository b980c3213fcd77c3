"""The worker's round with `tuner.train.negatives` ann_mined, against the real OpenSearch: the
negatives mined from the live document index reach the pairs that train, within the bounds; a
mining index that does not exist fails the task before anything trains.

The worker runs in this process (`build_worker(...).tick()`, what `clicktune tuner run --once`
does) on the small world of tests/integration/worker_world.py, so `tuner.train.fine_tune` can be
wrapped to record the pairs and texts it is given.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

import tuner.train
from serving.state.tasks import new_task
from tests.integration.worker_world import World
from tuner.pairs import query_key

pytestmark = pytest.mark.integration

DEPTH = 10
MAX_QUERIES = 3


@pytest.fixture()
def fine_tunes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[Any], dict[str, Any]]]:
    """The (pairs, doc_texts) of every `fine_tune` call, which then trains as usual."""
    calls: list[tuple[list[Any], dict[str, Any]]] = []
    real = tuner.train.fine_tune

    def spy(model, pairs, doc_texts, settings, progress=True, parallel=None):  # type: ignore[no-untyped-def]
        calls.append((list(pairs), dict(doc_texts)))
        return real(model, pairs, doc_texts, settings, progress=progress, parallel=parallel)

    monkeypatch.setattr(tuner.train, "fine_tune", spy)
    return calls


def run_task(world: World, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    """Queue a task and let an in-process worker, configured like `world`'s, take it."""
    from clicktune.cli.tuner import build_worker
    from clicktune.config import load_settings

    for name, value in {**world.env, **env}.items():
        if name.startswith("CLICKTUNE_"):
            monkeypatch.setenv(name, value)
    task, _ = world.store.create(new_task("weighted-infonce"))
    worker = build_worker(load_settings())
    try:
        worker.tick()
    finally:
        worker.lease.release()
    return world.store.get(task.id)


@pytest.mark.slow
def test_the_workers_round_trains_on_negatives_mined_from_the_live_index(
    world: World,
    fine_tunes: list[tuple[list[Any], dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.add_sessions(24)
    live = world.doc_index.live_index()
    with caplog.at_level(logging.INFO):
        final = run_task(
            world,
            monkeypatch,
            CLICKTUNE_TUNER__TRAIN__NEGATIVES="ann_mined",
            CLICKTUNE_TUNER__TRAIN__ANN_DEPTH=str(DEPTH),
            CLICKTUNE_TUNER__TRAIN__ANN_MAX_QUERIES=str(MAX_QUERIES),
        )
    assert final.status == "done", final.reason
    assert fine_tunes, "nothing trained"
    pairs, doc_texts = fine_tunes[0]
    rewarded: dict[str, set[str]] = {}
    for pair in pairs:
        rewarded.setdefault(query_key(pair.query), set()).add(pair.positive_id)
    mined = {query_key(p.query): p.hard_negative_ids for p in pairs if p.hard_negative_ids}
    assert len(mined) == MAX_QUERIES  # the bound on queries searched, all of them answered
    for key, negatives in mined.items():
        vector = world.encoder.encode([key])[0]  # the live model, as serving runs it
        near = {h.id for h in world.doc_index.search_knn(vector, DEPTH + 5, index=live)}
        assert set(negatives) <= near - rewarded[key], key  # neighbours, none rewarded
        assert all(n in doc_texts for n in negatives), "a mined negative trained without text"
    assert "ann_mined:" in caplog.text and f"in {live!r} at depth {DEPTH}" in caplog.text


def test_a_mining_index_that_does_not_exist_fails_the_task_before_training(
    world: World,
    fine_tunes: list[tuple[list[Any], dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.add_sessions(12)
    missing = f"tw_{world.unique}_no_such_docs"
    final = run_task(
        world,
        monkeypatch,
        CLICKTUNE_TUNER__TRAIN__NEGATIVES="ann_mined",
        CLICKTUNE_TUNER__TRAIN__ANN_INDEX=missing,
    )
    assert final.status == "error"
    assert str(final.reason).startswith(f"training: tuner.train.ann_index {missing!r} does not")
    assert "must name an existing index" in str(final.reason)
    assert fine_tunes == []
