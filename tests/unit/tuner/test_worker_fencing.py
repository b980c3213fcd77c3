"""The worker's lease fencing, task ownership, own-version adoption, cancel cleanup and the
retry of transient errors, on fakes (the store's real concurrency logic on `FakeOpenSearch`)."""

from __future__ import annotations

import pytest
from opensearchpy.exceptions import ConnectionError as OpenSearchConnectionError
from opensearchpy.exceptions import TransportError

from serving.errors import DocumentIndexError
from serving.state.tasks import (
    OpenSearchTaskStore,
    Stage,
    TaskError,
    TaskRecord,
    TaskStatus,
    cancel_task,
    new_task,
)
from tests.unit.serving.task_fakes import FakeOpenSearch
from tests.unit.tuner.worker_fakes import FakeStages
from tuner.config import RolloutMode, WorkerSettings
from tuner.worker.lock import Lease, LeaseLostError
from tuner.worker.retry import backoff, is_transient
from tuner.worker.runner import TaskRunner

SETTINGS = WorkerSettings(
    rollout=RolloutMode.promote, retry_initial_s=1, retry_max_s=3, stage_deadline_s=20
)


class Clocks:
    """A wall clock and a monotonic clock that only move when told (or when a runner sleeps)."""

    def __init__(self) -> None:
        self.wall, self.mono, self.slept = 1000.0, 50.0, []  # type: ignore[var-annotated]

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def _lease(client: FakeOpenSearch, owner: str, clocks: Clocks) -> Lease:
    return Lease(
        client,  # type: ignore[arg-type]
        "lease",
        owner,
        60,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )


def _runner(store: OpenSearchTaskStore, stages: FakeStages, me: str, lease: Lease, clocks: Clocks):  # type: ignore[no-untyped-def]
    return TaskRunner(
        store,
        stages,
        SETTINGS,
        me,
        lease.fence(),
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
        sleep=clocks.sleep,
    )


def _training(store: OpenSearchTaskStore, worker: str) -> TaskRecord:
    task = store.get(store.create(new_task("m"))[0].id)
    notes = {"versions_before": ["base"]}
    return store.move(task, Stage.training, worker, batch_id="b", notes=notes)


# -- the lease and its fence -------------------------------------------------------------------
def test_the_fencing_token_goes_up_with_every_new_tenure_and_stays_on_renewal() -> None:
    client, clocks = FakeOpenSearch(), Clocks()
    a, b = _lease(client, "a", clocks), _lease(client, "b", clocks)
    assert a.acquire() and a.token == 1
    clocks.advance(30)
    assert a.renew() and a.token == 1
    clocks.advance(61)
    assert b.acquire() and b.token == 2
    assert not a.renew()
    with pytest.raises(LeaseLostError, match="not registering"):
        a.fence().check("registering")


def test_a_paused_holder_may_not_act_once_lease_s_passed_without_a_renewal() -> None:
    client, clocks = FakeOpenSearch(), Clocks()
    a = _lease(client, "a", clocks)
    assert a.acquire()
    fence = a.fence()
    fence.check("registering")
    clocks.mono += 60  # SIGSTOP: nobody took the lease, but this holder cannot know that
    assert fence.is_lost()
    with pytest.raises(LeaseLostError, match="no successful renewal for lease_s=60"):
        fence.check("registering")


def test_a_fence_reads_the_lease_before_acting_even_when_its_own_clock_lags() -> None:
    client, clocks = FakeOpenSearch(), Clocks()
    a, b = _lease(client, "a", clocks), _lease(client, "b", clocks)
    assert a.acquire()
    fence = a.fence()
    clocks.wall += 61  # the lease expired by the wall clock; a's monotonic clock did not move
    assert b.acquire()
    assert not fence.is_lost()  # nothing local tells a
    with pytest.raises(LeaseLostError, match="held by b"):
        fence.check("promoting v1")


# -- a stale runner ----------------------------------------------------------------------------
def test_a_paused_worker_registers_nothing_and_the_standby_finishes_the_task() -> None:
    client, clocks = FakeOpenSearch(), Clocks()
    store = OpenSearchTaskStore(client, "tasks")  # type: ignore[arg-type]
    a, b = _lease(client, "a", clocks), _lease(client, "b", clocks)
    assert a.acquire()
    stages = FakeStages()
    task = _training(store, "a")

    def paused_then_standby_takes_over() -> None:
        clocks.advance(90)
        assert b.acquire()

    stages.on_train = paused_then_standby_takes_over
    with pytest.raises(LeaseLostError):
        _runner(store, stages, "a", a, clocks).run(task)
    assert stages.versions() == ["base"]  # the candidate was never registered
    assert "promote" not in stages.calls
    assert store.get(task.id).stage == Stage.training  # nothing stored by the stale worker

    stages.on_train = None
    final = _runner(store, stages, "b", b, clocks).run(store.get(task.id))
    assert (final.status, final.worker, final.resumes) == (TaskStatus.done, "b", 1)
    assert stages.calls.count("promote") == 1


def test_a_runner_stops_when_the_stored_task_names_another_worker() -> None:
    client, clocks = FakeOpenSearch(), Clocks()
    store = OpenSearchTaskStore(client, "tasks")  # type: ignore[arg-type]
    lease = _lease(client, "w1", clocks)
    assert lease.acquire()
    stages = FakeStages()
    task = store.move(_training(store, "w1"), Stage.registered, "w1", version="v1")

    def another_worker_takes_the_task() -> None:
        stored = store.get(task.id)
        if stored.worker != "w2":
            store.update(stored, worker="w2", resumes=1)

    original = stages.reindex

    def reindex(version: str) -> str:
        another_worker_takes_the_task()
        return original(version)

    stages.reindex = reindex  # type: ignore[method-assign]
    with pytest.raises(LeaseLostError, match="now run by worker w2"):
        _runner(store, stages, "w1", lease, clocks).run(task)
    stored = store.get(task.id)
    assert (stored.stage, stored.worker) == (Stage.reindexing, "w2")
    assert "promote" not in stages.calls and "clean_up" not in stages.calls


# -- adoption and cancel -----------------------------------------------------------------------
def test_a_resumed_training_adopts_only_a_version_registered_for_this_task() -> None:
    store, stages = OpenSearchTaskStore(FakeOpenSearch(), "tasks"), FakeStages()  # type: ignore[arg-type]
    task = _training(store, "dead")
    stages.registered.append(("v7", "another-task"))  # registered meanwhile, not by this task
    final = TaskRunner(store, stages, SETTINGS, "w2").run(task)
    assert final.version == "v1" and "adopt v7" not in stages.calls
    assert "train" in stages.calls


def test_a_cancel_after_registration_archives_the_version() -> None:
    store, stages = OpenSearchTaskStore(FakeOpenSearch(), "tasks"), FakeStages()  # type: ignore[arg-type]
    task = _training(store, "w1")
    stages.registered.append(("v1", task.id))
    task = store.move(task, Stage.registered, "w1", version="v1")
    cancel_task(store, task.id)
    final = TaskRunner(store, stages, SETTINGS, "w1").run(store.get(task.id))
    assert final.stage == Stage.canceled and "version v1 archived" in str(final.reason)
    assert stages.cleanups == [{"drop_version": True, "keep_checkpoint": False}]
    assert stages.versions() == ["base"]


# -- transient errors --------------------------------------------------------------------------
def _unreachable() -> DocumentIndexError:
    try:
        raise OpenSearchConnectionError("N/A", "connection refused", None)
    except OpenSearchConnectionError as exc:
        try:
            raise DocumentIndexError("cannot write the index") from exc
        except DocumentIndexError as wrapped:
            return wrapped


def test_transient_errors_are_those_a_later_try_may_not_meet() -> None:
    assert is_transient(_unreachable())
    assert is_transient(TransportError(429, "too_many_requests", {}))
    assert is_transient(TransportError(503, "unavailable_shards_exception", {}))
    assert not is_transient(TransportError(400, "mapper_parsing_exception", {}))
    assert not is_transient(RuntimeError("gate broke"))
    assert [backoff(n, 1, 3) for n in (1, 2, 3, 4)] == [1, 2, 3, 3]


def _flaky_reindex(stages: FakeStages, failures: list[BaseException]) -> None:
    original = stages.reindex

    def reindex(version: str) -> str:
        stages.calls.append("reindex try")
        if failures:
            raise failures.pop(0)
        return original(version)

    stages.reindex = reindex  # type: ignore[method-assign]


def test_a_transient_error_is_retried_with_capped_backoff_then_the_task_goes_on(caplog) -> None:  # type: ignore[no-untyped-def]
    client, clocks = FakeOpenSearch(), Clocks()
    store = OpenSearchTaskStore(client, "tasks")  # type: ignore[arg-type]
    lease = _lease(client, "w1", clocks)
    assert lease.acquire()
    stages = FakeStages()
    _flaky_reindex(stages, [_unreachable() for _ in range(4)])
    task = store.move(_training(store, "w1"), Stage.registered, "w1", version="v1")
    caplog.set_level("WARNING")
    final = _runner(store, stages, "w1", lease, clocks).run(task)
    assert final.status == TaskStatus.done
    assert clocks.slept == [1, 2, 3, 3]  # retry_initial_s doubling, capped at retry_max_s
    assert stages.calls.count("reindex try") == 5 and "clean_up" not in stages.calls
    assert "transient error (try 4), retrying in 3.0 s" in caplog.text


def test_a_permanent_error_fails_the_task_at_once() -> None:
    store, stages = OpenSearchTaskStore(FakeOpenSearch(), "tasks"), FakeStages()  # type: ignore[arg-type]
    _flaky_reindex(stages, [TransportError(400, "mapper_parsing_exception", {})])
    task = store.move(_training(store, "w1"), Stage.registered, "w1", version="v1")
    final = TaskRunner(store, stages, SETTINGS, "w1", sleep=lambda s: None).run(task)
    assert final.status == TaskStatus.error and "mapper_parsing_exception" in str(final.reason)
    assert stages.calls.count("reindex try") == 1
    assert stages.cleanups == [{"drop_version": False, "keep_checkpoint": False}]


def test_transient_errors_past_the_stage_deadline_fail_the_task_keeping_the_checkpoint() -> None:
    client, clocks = FakeOpenSearch(), Clocks()
    store = OpenSearchTaskStore(client, "tasks")  # type: ignore[arg-type]
    lease = _lease(client, "w1", clocks)
    assert lease.acquire()
    stages = FakeStages()
    _flaky_reindex(stages, [_unreachable() for _ in range(100)])
    task = store.move(_training(store, "w1"), Stage.registered, "w1", version="v1")

    renewing = clocks.sleep

    def sleep_while_the_heartbeat_renews(seconds: float) -> None:
        renewing(seconds)
        assert lease.renew()

    runner = _runner(store, stages, "w1", lease, clocks)
    runner.sleep = sleep_while_the_heartbeat_renews
    final = runner.run(task)
    assert final.status == TaskStatus.error and "stage_deadline_s=20" in str(final.reason)
    assert sum(clocks.slept) >= 20 and stages.calls.count("reindex try") == len(clocks.slept) + 1
    assert stages.cleanups == [{"drop_version": False, "keep_checkpoint": True}]


def test_a_candidate_registered_before_storing_it_failed_is_adopted_on_the_retry() -> None:
    store, stages = OpenSearchTaskStore(FakeOpenSearch(), "tasks"), FakeStages()  # type: ignore[arg-type]
    move, failures = store.move, [_unreachable()]

    def registered_fails_once(task, stage, *args, **kwargs):  # type: ignore[no-untyped-def]
        if stage == Stage.registered and failures:
            raise TaskError(f"cannot store task {task.id!r}") from failures.pop()
        return move(task, stage, *args, **kwargs)

    store.move = registered_fails_once  # type: ignore[method-assign]
    task = store.get(store.create(new_task("m", batch_id="b"))[0].id)
    final = TaskRunner(store, stages, SETTINGS, "w1", sleep=lambda s: None).run(task)
    assert final.status == TaskStatus.done and final.version == "v1"
    assert stages.calls.count("train") == 1 and "adopt v1" in stages.calls
    assert stages.versions() == ["base", "v1"]  # not trained and registered again


def test_a_lease_read_failing_between_two_stages_is_retried_in_the_next(caplog) -> None:  # type: ignore[no-untyped-def]
    client, clocks = FakeOpenSearch(), Clocks()
    store = OpenSearchTaskStore(client, "tasks")  # type: ignore[arg-type]
    lease = _lease(client, "w1", clocks)
    assert lease.acquire()
    task = store.move(_training(store, "w1"), Stage.registered, "w1", version="v1")
    holder, reads = lease.holder, [0]

    def second_read_fails():  # type: ignore[no-untyped-def]
        reads[0] += 1  # 1: taking the task; 2: before the stage's work
        if reads[0] == 2:
            raise TaskError("cannot read lease") from _unreachable()
        return holder()

    lease.holder = second_read_fails  # type: ignore[method-assign]
    caplog.set_level("WARNING")
    final = _runner(store, FakeStages(), "w1", lease, clocks).run(task)
    assert final.status == TaskStatus.done and clocks.slept == [1]
    assert f"task {task.id} registered: transient error (try 1)" in caplog.text
