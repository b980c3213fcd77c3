"""The task state table, the store's optimistic concurrency, idempotency and cancel."""

from __future__ import annotations

import pytest

from serving.state.tasks import (
    CANCELABLE,
    STATUS_OF,
    TERMINAL,
    TRANSITIONS,
    OpenSearchTaskStore,
    Stage,
    TaskConflictError,
    TaskStatus,
    TaskTransitionError,
    cancel_task,
    new_task,
)
from tests.unit.serving.task_fakes import FakeOpenSearch


@pytest.fixture()
def store() -> OpenSearchTaskStore:
    return OpenSearchTaskStore(FakeOpenSearch(), "tasks")  # type: ignore[arg-type]


def test_every_stage_reaches_a_final_stage_and_finals_go_nowhere() -> None:
    for stage in Stage:
        seen, frontier = {stage}, [stage]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL, f"{stage} can never finish"
    assert {Stage.done, Stage.rejected, Stage.canceled, Stage.failed} == TERMINAL
    assert {STATUS_OF[s] for s in TERMINAL} == {"done", "rejected", "canceled", "error"}
    assert STATUS_OF[Stage.queued] == TaskStatus.pending
    assert Stage.promoting not in CANCELABLE and Stage.training in CANCELABLE


def test_a_transition_outside_the_table_is_refused_naming_both_stages(store) -> None:  # type: ignore[no-untyped-def]
    task, _ = store.create(new_task("m"))
    with pytest.raises(TaskTransitionError, match="'queued' cannot move to 'done'"):
        store.move(task, Stage.done)
    assert store.get(task.id).stage == Stage.queued


def test_two_workers_that_read_the_same_task_cannot_both_take_it(store) -> None:  # type: ignore[no-untyped-def]
    task, _ = store.create(new_task("m"))
    first, second = store.get(task.id), store.get(task.id)
    taken = store.move(first, Stage.releasing, "worker-a")
    with pytest.raises(TaskConflictError):
        store.move(second, Stage.releasing, "worker-b")
    stored = store.get(task.id)
    assert stored.worker == "worker-a" and stored.status == TaskStatus.processing
    assert [h["stage"] for h in stored.history] == ["queued", "releasing"]
    assert taken.updated_at >= task.updated_at


def test_the_same_idempotency_key_returns_the_same_task(store) -> None:  # type: ignore[no-untyped-def]
    first, created = store.create(new_task("m", metadata={"a": 1}, idempotency_key="k-1"))
    again, created_again = store.create(new_task("other", idempotency_key="k-1"))
    assert created and not created_again
    assert again.id == first.id and again.fine_tuning_method == "m"
    other, _ = store.create(new_task("m", idempotency_key="k-2"))
    assert other.id != first.id


def test_list_filters_by_status_and_pages_newest_first(store) -> None:  # type: ignore[no-untyped-def]
    ids = [store.create(new_task("m"))[0].id for _ in range(5)]
    cancel_task(store, ids[0])
    assert [t.id for t in store.list(limit=2)] == ids[::-1][:2]
    assert [t.id for t in store.list(limit=2, offset=2)] == ids[::-1][2:4]
    assert [t.id for t in store.list(status="canceled")] == [ids[0]]
    assert [t.id for t in store.unfinished()] == ids[1:]


def test_cancel_stops_queued_at_once_running_through_canceling_and_refuses_late(store) -> None:  # type: ignore[no-untyped-def]
    queued, _ = store.create(new_task("m"))
    assert cancel_task(store, queued.id).stage == Stage.canceled
    running, _ = store.create(new_task("m"))
    running = store.move(store.get(running.id), Stage.training, "w")
    canceled = cancel_task(store, running.id)
    assert canceled.stage == Stage.canceling and canceled.status == TaskStatus.canceled
    promoting, _ = store.create(new_task("m"))
    task = store.get(promoting.id)
    for stage in (Stage.training, Stage.registered, Stage.reindexing, Stage.promoting):
        task = store.move(task, stage, "w")
    with pytest.raises(TaskTransitionError, match="'promoting' and can no longer be canceled"):
        cancel_task(store, promoting.id)
