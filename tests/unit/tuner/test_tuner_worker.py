"""The worker's logic on fakes: trigger decisions, the lease, and the runner's stage walk,
resume and failure rules (the real stage work runs in tests/integration/test_tuner_worker.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from serving.state.tasks import (
    OpenSearchTaskStore,
    Stage,
    TaskRecord,
    TaskStatus,
    cancel_task,
    new_task,
)
from tests.unit.serving.task_fakes import FakeOpenSearch
from tests.unit.tuner.worker_fakes import FakeStages
from tuner.batches import Batch, BatchStore
from tuner.config import RolloutMode, WorkerSettings
from tuner.worker.lock import Lease
from tuner.worker.runner import TaskRunner
from tuner.worker.trigger import check, decide

SETTINGS = WorkerSettings(min_new_sessions=10, min_interval_s=600, rollout=RolloutMode.promote)


# -- trigger -----------------------------------------------------------------------------------
def test_trigger_needs_enough_sessions_the_interval_and_no_running_task() -> None:
    assert decide(10, None, SETTINGS).fire  # first batch ever: no interval to wait for
    assert not decide(9, None, SETTINGS).fire
    assert not decide(50, 599.0, SETTINGS).fire
    assert decide(50, 601.0, SETTINGS).fire
    busy = decide(50, 601.0, SETTINGS, busy="task t1 is training")
    assert not busy.fire and "task t1 is training" in busy.reason
    assert "50 new sessions (min_new_sessions=10)" in decide(50, 1.0, SETTINGS).reason


class Counter:
    def __init__(self, n: int) -> None:
        self.n = n
        self.asked: list[tuple[Any, Any]] = []

    def count(self, since: datetime | None, until: datetime) -> int:
        self.asked.append((since, until))
        return self.n


def test_trigger_counts_from_the_last_window_end_to_now_minus_grace(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    store = BatchStore(tmp_path)
    end = datetime(2026, 3, 1, 12, tzinfo=UTC)
    store.save(Batch("batch-0001", None, end.isoformat(), end.isoformat(), 3, 3, 3, ("a",)))
    counter, now = Counter(12), end + timedelta(minutes=20)
    caplog.set_level("INFO")
    decision = check(store, counter, SETTINGS, now, timedelta(minutes=5))
    assert counter.asked == [(end, now - timedelta(minutes=5))]
    assert decision.fire and decision.last_batch == "batch-0001"
    assert decision.since_last_batch_s == 1200
    assert "12 new sessions" in caplog.text


# -- lease -------------------------------------------------------------------------------------
def test_a_standby_takes_the_lease_only_after_it_expired() -> None:
    client, now = FakeOpenSearch(), [1000.0]
    a = Lease(client, "lease", "a", 60, clock=lambda: now[0])  # type: ignore[arg-type]
    b = Lease(client, "lease", "b", 60, clock=lambda: now[0])  # type: ignore[arg-type]
    assert a.acquire() and not b.acquire()
    now[0] += 59
    assert a.renew() and not b.acquire()
    now[0] += 61  # a stopped renewing (killed)
    assert b.acquire() and not a.renew() and not a.acquire()
    b.release()
    assert a.acquire()


# -- runner ------------------------------------------------------------------------------------
def _store() -> OpenSearchTaskStore:
    return OpenSearchTaskStore(FakeOpenSearch(), "tasks")  # type: ignore[arg-type]


def _queued(store: OpenSearchTaskStore) -> TaskRecord:
    return store.get(store.create(new_task("m"))[0].id)


def test_a_task_walks_every_stage_storing_each_one_before_its_work() -> None:
    store, stages = _store(), FakeStages()
    stored_before: dict[str, str] = {}
    original = stages._call

    def spy(name: str) -> None:  # the stage stored when each piece of work starts
        stored_before[name] = store.list(limit=1)[0].stage.value
        original(name)

    stages._call = spy  # type: ignore[method-assign]
    final = TaskRunner(store, stages, SETTINGS, "w1").run(_queued(store))
    assert final.status == TaskStatus.done and final.version == "v1"
    assert final.batch_id == "batch-0001" and final.metrics["pairs"] == 3
    assert stored_before == {
        "release": "releasing",
        "train": "training",
        "reindex": "reindexing",
        "promote": "promoting",
    }
    assert [h["stage"] for h in final.history] == [
        "queued",
        "releasing",
        "training",
        "registered",
        "reindexing",
        "promoting",
        "done",
    ]


def test_a_rejected_candidate_ends_rejected_with_the_gate_reason() -> None:
    store, stages = _store(), FakeStages(outcome="rejected")
    final = TaskRunner(store, stages, SETTINGS, "w1").run(_queued(store))
    assert (final.status, final.reason) == (TaskStatus.rejected, "gate: no better")
    assert "reindex" not in stages.calls


def test_ab_mode_waits_for_the_policy_then_promotes() -> None:
    store, stages = _store(), FakeStages()
    settings = SETTINGS.model_copy(update={"rollout": RolloutMode.ab})
    runner = TaskRunner(store, stages, settings, "w1")
    waiting = runner.run(_queued(store))
    assert waiting.stage == Stage.ab_running and waiting.notes["experiment"] == "exp1"
    stages.decisions = ["continue", "continue", "continue", "promote"]
    for other in ("w2", "w3", "w4"):  # successive `--once` workers look: waiting is no resume
        waiting = TaskRunner(store, stages, settings, other).run(store.get(waiting.id))
    final = runner.run(store.get(waiting.id))
    assert final.status == TaskStatus.done and final.resumes == 0
    assert stages.calls.count("start_ab") == 1 and stages.calls[-1] == "promote"


def test_two_stage_promotes_strong_offline_evidence_without_an_online_test() -> None:
    store, stages = _store(), FakeStages()
    settings = SETTINGS.model_copy(update={"rollout": RolloutMode.two_stage})
    final = TaskRunner(store, stages, settings, "w1").run(_queued(store))
    assert final.status == TaskStatus.done and "start_ab" not in stages.calls


def test_two_stage_tests_a_non_inferior_candidate_interleaved_and_records_the_tally() -> None:
    store, stages = _store(), FakeStages()
    stages.verdict, stages.decisions = "online", ["continue", "rollback"]
    settings = SETTINGS.model_copy(update={"rollout": RolloutMode.two_stage, "ab_mode": "split"})
    runner = TaskRunner(store, stages, settings, "w1")
    waiting = runner.run(_queued(store))
    assert waiting.stage == Stage.ab_running and stages.modes == ["interleave"]
    assert waiting.metrics["online"] == {"wins": 3, "searches": 9, "decision": "continue"}
    final = runner.run(store.get(waiting.id))
    assert final.status == TaskStatus.rejected and final.reason == "policy"
    assert final.metrics["online"]["decision"] == "rollback" and "promote" not in stages.calls


def test_a_query_candidate_is_promoted_without_a_reindex() -> None:
    store, stages = _store(), FakeStages()
    stages.side = "query"
    final = TaskRunner(store, stages, SETTINGS, "w1").run(_queued(store))
    assert final.status == TaskStatus.done and final.metrics["reindexed"] is False
    assert stages.calls == ["release", "train", "promote"]
    stages_walked = [h["stage"] for h in final.history]
    assert stages_walked == ["queued", "releasing", "training", "registered", "promoting", "done"]


def test_a_non_inferior_query_candidate_goes_to_the_online_test_without_a_reindex() -> None:
    store, stages = _store(), FakeStages()
    stages.side, stages.verdict = "query", "online"
    settings = SETTINGS.model_copy(update={"rollout": RolloutMode.two_stage})
    final = TaskRunner(store, stages, settings, "w1").run(_queued(store))
    waiting = [h["stage"] for h in final.history]
    assert waiting == ["queued", "releasing", "training", "registered", "ab_running"]
    assert "reindex" not in stages.calls and stages.modes == ["interleave"]
    final = TaskRunner(store, stages, settings, "w1").run(store.get(final.id))
    assert final.status == TaskStatus.done and "reindex" not in stages.calls


def test_a_failing_stage_fails_the_task_with_the_reason_after_cleaning_up() -> None:
    store, stages = _store(), FakeStages(fail_in="reindex")
    final = TaskRunner(store, stages, SETTINGS, "w1").run(_queued(store))
    assert final.status == TaskStatus.error
    assert final.reason == "reindexing: reindex broke (cleaned up: alias removed)"


def test_a_task_left_by_a_dead_worker_is_resumed_then_failed_past_max_resumes() -> None:
    store, stages = _store(), FakeStages()
    task = _queued(store)
    for stage in (Stage.training, Stage.registered, Stage.reindexing):
        task = store.move(task, stage, "dead-worker", version="v1")
    final = TaskRunner(store, stages, SETTINGS, "w2").run(task)
    assert final.status == TaskStatus.done and final.resumes == 1
    assert stages.calls == ["reindex", "promote"]  # resumed where it was, nothing redone

    stuck = _queued(store)
    stuck = store.move(stuck, Stage.training, "dead", resumes=SETTINGS.max_resumes)
    failed = TaskRunner(store, FakeStages(), SETTINGS, "w3").run(stuck)
    assert failed.status == TaskStatus.error and "died in stage 'training'" in failed.reason


def test_a_version_the_dead_worker_registered_is_adopted_not_trained_again() -> None:
    store, stages = _store(), FakeStages()
    task = store.move(
        _queued(store), Stage.training, "dead", batch_id="b", notes={"versions_before": ["base"]}
    )
    stages.registered.append(("v7", task.id))  # registered, then killed before storing that
    final = TaskRunner(store, stages, SETTINGS, "w2").run(task)
    assert final.version == "v7" and final.status == TaskStatus.done
    assert "train" not in stages.calls and "adopt v7" in stages.calls


def test_a_version_registered_before_this_worker_lost_its_lease_is_adopted() -> None:
    store, stages = _store(), FakeStages()
    task = store.move(
        _queued(store), Stage.training, "w1", batch_id="b", notes={"versions_before": ["base"]}
    )
    stages.registered.append(("v1", task.id))  # w1 registered v1, lost the lease before storing
    final = TaskRunner(store, stages, SETTINGS, "w1").run(task)  # w1 holds the lease again
    assert (final.version, final.resumes) == ("v1", 0)
    assert "train" not in stages.calls and "adopt v1" in stages.calls


def test_a_cancel_during_training_stops_the_task_and_cleans_up() -> None:
    store, stages = _store(), FakeStages()
    task = _queued(store)
    stages.on_train = lambda: cancel_task(store, task.id)
    final = TaskRunner(store, stages, SETTINGS, "w1").run(task)
    assert final.stage == Stage.canceled and final.status == TaskStatus.canceled
    assert stages.calls[-1] == "clean_up" and "reindex" not in stages.calls


def test_the_trigger_queues_one_task_and_a_second_worker_stands_by(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tuner.worker.scheduler import TunerWorker

    client = FakeOpenSearch()
    store = OpenSearchTaskStore(client, "tasks")  # type: ignore[arg-type]
    stages = FakeStages()

    def worker(name: str) -> TunerWorker:
        return TunerWorker(
            store,
            Lease(client, "lease", name, 60),  # type: ignore[arg-type]
            BatchStore(tmp_path),
            Counter(25),
            lambda fence: TaskRunner(store, stages, SETTINGS, name, fence),
            SETTINGS,
            grace=timedelta(0),
        )

    first, second = worker("a"), worker("b")
    answer = first.tick()
    assert answer["trigger"]["fire"] and answer["tasks"][0]["status"] == "done"
    standby = second.tick()
    assert standby["standby"] and standby["lease"]["owner"] == "a" and "tasks" not in standby
    assert "release" in stages.calls and len(store.list()) == 1
    first.lease.release()
    again = second.tick()  # no batch was really released by the fake: still 25 new sessions
    assert again["trigger"]["fire"] and len(store.list()) == 2
