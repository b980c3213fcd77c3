"""Releasing batches, earlier batches' history (replay, held-out sessions), and the splits.

Tests taking `batch_stores` run on each `serving.state.backend`: the files (unit) and a real
OpenSearch index (integration; tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tuner.batches import Batch, Batches, BatchStore, release_batch, reload_batch
from tuner.config import BatchSettings, TunerSettings
from tuner.errors import BatchConflictError, NoTrainingDataError
from tuner.history import History, history, sample
from tuner.iteration import IterationContext
from tuner.sessions import Session
from tuner.splits import split_sessions
from tuner.worker.stages import LoopStages

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
Stores = Callable[[], Batches]  # another instance over the same storage on each call


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class FakeSessions:
    """`SessionSource` over a list of sessions."""

    def __init__(self, sessions: Sequence[Session]) -> None:
        self.all = list(sessions)

    def sessions(self, since: datetime | None, until: datetime | None) -> list[Session]:
        return [
            s
            for s in self.all
            if s.timestamp is not None
            and (since is None or s.timestamp >= since)
            and (until is None or s.timestamp < until)
        ]

    def sessions_by_id(self, query_ids: Sequence[str]) -> list[Session]:
        wanted = set(query_ids)
        return [s for s in self.all if s.query_id in wanted]


def logged(query_id: str, minutes: float, query: str = "drill") -> Session:
    return Session(query_id, query, ("d1",), timestamp=at(minutes))


def test_a_batch_freezes_the_sessions_up_to_now_minus_grace(tmp_path) -> None:  # type: ignore[no-untyped-def]
    source = FakeSessions([logged("a", 0), logged("b", 10), logged("late", 29)])
    store = BatchStore(tmp_path / "batches")
    released = release_batch(store, source, at(30), grace=timedelta(minutes=5))
    assert released.batch.batch_id == "batch-0001"
    assert [s.query_id for s in released.sessions] == ["a", "b"]  # "late" waits for its events
    record = json.loads((tmp_path / "batches" / "batch-0001.json").read_text())
    assert record["session_ids"] == ["a", "b"] and record["sessions"] == 2
    assert record["window_start"] is None and record["window_end"] == at(25).isoformat()

    second = release_batch(store, source, at(60), grace=timedelta(minutes=5))
    assert second.batch.batch_id == "batch-0002"
    assert [s.query_id for s in second.sessions] == ["late"]
    assert second.batch.window_start == at(25).isoformat()


def test_an_empty_window_is_refused_and_records_nothing(batch_stores: Stores) -> None:
    store = batch_stores()
    with pytest.raises(NoTrainingDataError, match="no sessions to train on"):
        release_batch(store, FakeSessions([logged("a", 50)]), at(30), timedelta(0))
    assert store.list() == []


def test_a_released_batch_reloads_its_own_sessions(batch_stores: Stores) -> None:
    source = FakeSessions([logged("a", 0), logged("b", 1)])
    store = batch_stores()
    release_batch(store, source, at(5), timedelta(0))
    source.all.append(logged("c", 2))  # logged later with an old timestamp: not in the batch
    again = reload_batch(store, source, "batch-0001")
    assert [s.query_id for s in again.sessions] == ["a", "b"]
    with pytest.raises(Exception, match="batch-0009.*batch-0001"):
        reload_batch(store, source, "batch-0009")


def test_replay_samples_only_earlier_batches(batch_stores: Stores) -> None:
    source = FakeSessions([logged(f"old{i}", i) for i in range(10)] + [logged("new", 30)])
    store = batch_stores()
    release_batch(store, source, at(20), timedelta(0))
    current = release_batch(store, source, at(40), timedelta(0)).batch
    earlier = history(store, source, current, BatchSettings(validation_fraction=0.2))
    replayed = sample(earlier.train, count=4, seed=1)
    assert len(replayed) == 4 and all(s.query_id.startswith("old") for s in replayed)
    assert sample(earlier.train, count=0) == []
    first = store.get("batch-0001")
    assert history(store, source, first, BatchSettings()) == History(train=[], validation=[])


def test_held_out_sessions_of_earlier_batches_stay_held_out(batch_stores: Stores) -> None:
    """Replay never trains on an earlier batch's validation or cold-query sessions, which
    join the validation of later batches instead; whatever order the source returns them in."""
    settings = BatchSettings(validation_fraction=0.25, cold_query_fraction=0.3)
    old = [logged(f"old{i}", i, query=f"query {i % 25}") for i in range(100)]
    source = FakeSessions([*old, logged("new", 200)])
    store = batch_stores()
    first = release_batch(store, source, at(150), timedelta(0))
    when_trained = split_sessions(first.sessions, settings)
    source.all.reverse()  # the search engine may return the sessions in another order
    current = release_batch(store, source, at(300), timedelta(0)).batch
    earlier = history(store, source, current, settings)
    held_out = {s.query_id for s in when_trained.validation}
    assert held_out and {s.query_id for s in earlier.validation} == held_out
    assert {s.query_id for s in earlier.train} == {s.query_id for s in when_trained.train}
    assert not held_out & {s.query_id for s in sample(earlier.train, 1000)}
    none = BatchSettings(validation_fraction=0.25, cold_query_fraction=0.3, history_batches=0)
    assert history(store, source, current, none).train == []


def test_a_batch_id_is_recorded_once_the_same_record_again_is_a_no_op(batch_stores: Stores) -> None:
    store = batch_stores()
    first = release_batch(store, FakeSessions([logged("a", 0)]), at(5), timedelta(0)).batch
    store.save(first)  # a retried write of the same record
    other = Batch(first.batch_id, None, at(9).isoformat(), at(9).isoformat(), 1, 1, 0, ("z",))
    with pytest.raises(BatchConflictError, match="batch-0001 in .* released by another process"):
        store.save(other)
    assert batch_stores().list() == [first]


class Stale:
    """A store whose first `reads` listings are what it saw before another process released a
    batch (a worker between its list and its save)."""

    def __init__(self, store: Batches, reads: int) -> None:
        self.store, self.reads = store, reads

    def list(self) -> list[Batch]:
        self.reads -= 1
        return [] if self.reads >= 0 else self.store.list()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _stages(context: IterationContext) -> LoopStages:
    return LoopStages(
        context=context,
        settings=TunerSettings(),
        registry=None,  # type: ignore[arg-type]
        doc_index=None,  # type: ignore[arg-type]
        checkpoints=Path("unused"),
        reindexers=None,  # type: ignore[arg-type]
        experiments=None,  # type: ignore[arg-type]
        ab_settings=None,  # type: ignore[arg-type]
        client=None,  # type: ignore[arg-type]
        ubi_indexes=("q", "e"),
    )


def test_of_two_workers_freezing_the_next_batch_one_wins_and_the_other_adopts_it(
    batch_stores: Stores,
) -> None:
    source = FakeSessions([logged("a", 0), logged("b", 1)])
    won = release_batch(batch_stores(), source, at(5), timedelta(0)).batch
    with pytest.raises(BatchConflictError):
        release_batch(Stale(batch_stores(), reads=1), source, at(6), timedelta(0))
    assert batch_stores().list() == [won]  # the winner's window and sessions, unchanged
    late = Stale(batch_stores(), reads=2)  # the worker's own check, then release_batch's
    context = IterationContext(source, late, None, None, [])  # type: ignore[arg-type]
    assert _stages(context).release(batches_before=0) == "batch-0001"
    assert batch_stores().list() == [won]


def test_splits_hold_out_queries_and_the_latest_sessions() -> None:
    sessions = [logged(f"s{i}", i, query=f"query {i % 40}") for i in range(200)]
    settings = BatchSettings(validation_fraction=0.2, cold_query_fraction=0.25)
    splits = split_sessions(sessions, settings)
    cold_queries = {s.user_query for s in splits.cold}
    assert 4 <= len(cold_queries) <= 18  # about a quarter of the 40 queries
    assert not cold_queries & {s.user_query for s in splits.train + splits.latest}
    assert max(s.timestamp for s in splits.train) < min(s.timestamp for s in splits.latest)
    assert len(splits.latest) == int((200 - len(splits.cold)) * 0.2)
    assert len(splits.validation) == len(splits.latest) + len(splits.cold)


def test_few_queries_are_never_held_out() -> None:
    sessions = [logged(f"s{i}", i, query=f"q{i % 3}") for i in range(10)]
    splits = split_sessions(sessions, BatchSettings(validation_fraction=0.2))
    assert splits.cold == [] and len(splits.latest) == 2 and len(splits.train) == 8
