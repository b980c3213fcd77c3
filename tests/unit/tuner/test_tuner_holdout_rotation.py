"""The cold-query hold-out rotates per batch, is recorded, and never trains in its own batch
(the records on each `serving.state.backend`: `batch_stores` in tests/conftest.py)."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.tuner.test_tuner_batches import FakeSessions, Stores, at, logged
from tuner.batches import release_batch
from tuner.config import BatchSettings
from tuner.history import history, round_sessions
from tuner.pairs import query_key
from tuner.splits import held_out_queries, select_confirm, split_sessions

KEYS = [f"query {i}" for i in range(40)]
SETTINGS = BatchSettings(validation_fraction=0.2, cold_query_fraction=0.25)


def test_each_batch_holds_out_other_queries_so_every_query_trains_somewhere() -> None:
    held = [held_out_queries(KEYS, SETTINGS, f"batch-{n:04d}") for n in range(1, 11)]
    assert all(4 <= len(h) <= 18 for h in held)  # about a quarter of the 40 each time
    assert len({frozenset(h) for h in held}) == 10
    assert set().union(*(set(KEYS) - h for h in held)) == set(KEYS)
    assert held_out_queries(reversed(KEYS), SETTINGS, "batch-0003") == held[2]  # stable
    fixed = SETTINGS.model_copy(update={"rotate_cold_queries": False})
    assert held_out_queries(KEYS, fixed, "batch-0001") == held_out_queries(KEYS, fixed, "b-2")
    assert held_out_queries(KEYS, fixed, "batch-0001") == held_out_queries(KEYS, SETTINGS)


def test_a_round_records_its_held_out_queries_and_never_trains_or_replays_them(
    batch_stores: Stores,
) -> None:
    old = [logged(f"old{i}", i, query=KEYS[i % 40]) for i in range(200)]
    new = [logged(f"new{i}", 300 + i, query=KEYS[i % 40]) for i in range(200)]
    source = FakeSessions([*old, *new])
    store = batch_stores()
    first = round_sessions(
        store, source, release_batch(store, source, at(250), timedelta(0)), SETTINGS
    )
    released = release_batch(store, source, at(600), timedelta(0))
    second = round_sessions(
        store, source, released, SETTINGS.model_copy(update={"replay_ratio": 5})
    )

    cold = second.splits.cold_queries
    elsewhere = batch_stores()  # another worker reads the records
    assert (
        elsewhere.holdout("batch-0002") == cold
        and elsewhere.holdout("batch-0001") == first.splits.cold_queries
    )
    assert cold != first.splits.cold_queries
    trained_before = {query_key(s.user_query) for s in first.splits.train}
    assert cold & trained_before  # queries batch 1 trained on, batch 2 holds out...
    trained_now = [*second.splits.train, *second.replayed]
    assert second.replayed and not cold & {query_key(s.user_query) for s in trained_now}
    assert {s.query_id for s in second.replayed} <= {s.query_id for s in first.splits.train}
    validation = {s.query_id for s in second.validation}
    assert {s.query_id for s in first.splits.validation} <= validation  # ...and validates them


def test_an_earlier_batch_is_split_again_by_its_record(batch_stores: Stores) -> None:
    source = FakeSessions([logged(f"s{i}", i, query=KEYS[i % 40]) for i in range(120)])
    store = batch_stores()
    released = release_batch(store, source, at(200), timedelta(0))
    store.save_holdout("batch-0001", ["query 1", "query 2"])
    again = round_sessions(store, source, released, SETTINGS)  # a rerun keeps the record
    assert again.splits.cold_queries == {"query 1", "query 2"}
    source.all.append(logged("later", 300, query="query 7"))
    current = release_batch(store, source, at(400), timedelta(0)).batch
    earlier = history(store, source, current, SETTINGS)
    assert {query_key(s.user_query) for s in earlier.train}.isdisjoint({"query 1", "query 2"})
    assert (
        len({s.query_id for s in earlier.validation if s.user_query in ("query 1", "query 2")}) == 6
    )


def test_unrecorded_batches_split_as_before_and_the_gate_split_is_unchanged() -> None:
    sessions = [logged(f"s{i}", i, query=KEYS[i % 40]) for i in range(200)]
    legacy = split_sessions(sessions, SETTINGS)
    assert legacy.cold_queries == held_out_queries(KEYS, SETTINGS)  # no batch id: text hash
    rotated = split_sessions(sessions, SETTINGS, "batch-0001")
    assert rotated.cold_queries == held_out_queries(KEYS, SETTINGS, "batch-0001")
    keys = {query_key(s.user_query) for s in rotated.validation}
    split = select_confirm(keys, 0.5, SETTINGS.seed, sets=2)
    assert split.select | split.confirm == keys and not split.select & split.confirm
    assert split == select_confirm(keys, 0.5, SETTINGS.seed, sets=2)
