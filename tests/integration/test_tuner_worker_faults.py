"""The tuner worker under faults, against the real OpenSearch (and Kafka for the online test):
a lease holder frozen with SIGSTOP while a standby finishes its task, an OpenSearch outage in
each stage (a TCP proxy between the worker and OpenSearch), and a worker killed in the online
test, a rollback or a cancel, then resumed by a fresh `--once` worker.

Each test counts what a user would see lost or doubled: registry versions, the production
alias history, the document indexes of each version, the experiment records.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from urllib.parse import urlparse

import pytest

from clicktune.config import Settings
from serving.rollout.ab import ExperimentStore
from serving.state.tasks import Stage, TaskRecord, cancel_task, new_task
from tests.integration.worker_fault_support import (
    CuttingProxy,
    Replica,
    TaskRequests,
    Trip,
    ab_env,
    after_alias_move,
    any_request,
    bulk,
    wait_stopped,
)
from tests.integration.worker_world import ROOT, World

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SUPPORT = "tests.integration.worker_support"
# The world's 3 s lapsed in a worker's own ONNX export on a loaded machine (its heartbeat thread
# starved): it lost the lease and stopped mid-task. A killed worker's lease expires after it.
SLOW_LEASE = {"CLICKTUNE_TUNER__WORKER__LEASE_S": "10"}


def _indexes(world: World, version: str = "*") -> list[str]:
    """The document indexes built for `version` (every version's with "*"), sorted."""
    prefix = world.doc_index.settings.prefix
    found = world.client.indices.get(index=f"{prefix}__{version}__*", ignore=404)
    return sorted(name for name in found if name not in ("error", "status"))


def _versions(world: World) -> list[str]:
    return [v.version for v in world.registry.list()]


class Before:
    """What a task may change, as it was before the task ran."""

    def __init__(self, world: World) -> None:
        self.versions = _versions(world)
        self.history = world.registry.alias_history("production")
        self.production = world.registry.aliases()["production"]
        self.live = world.doc_index.live_index()
        self.indexes = _indexes(world)


def _assert_promoted_once(world: World, before: Before, final: TaskRecord) -> None:
    """One new version, production moved onto it once, one index built for it."""
    version = final.version
    assert final.status == "done", final.reason
    assert _versions(world) == [*before.versions, version]
    assert world.registry.alias_history("production") == [*before.history, version]
    built = _indexes(world, str(version))
    assert len(built) == 1 and _indexes(world) == sorted([*before.indexes, *built])
    assert world.doc_index.live_index() == built[0]
    world.assert_nothing_half_done()


def _assert_production_kept(world: World, before: Before) -> None:
    assert world.registry.aliases()["production"] == before.production
    assert world.registry.alias_history("production") == before.history
    assert world.doc_index.live_index() == before.live
    candidate = world.doc_index.settings.candidate_alias
    assert not world.client.indices.exists_alias(name=candidate)
    assert ExperimentStore(world.home / "models").load() is None, "the experiment still runs"
    world.assert_nothing_half_done()


def _stopped_experiments(world: World) -> list[str]:
    return sorted(p.stem for p in (world.home / "models" / "experiments").glob("*.json"))


# -- a frozen lease holder and a standby -------------------------------------------------------
def test_a_frozen_lease_holder_wakes_up_fenced_after_a_standby_finished_its_task(
    world: World,
) -> None:
    """Worker A stops (SIGSTOP) in training, holding the lease, with export and registration
    ahead; B takes the lease once it expired and runs the task to production; A, woken
    (SIGCONT), finds its lease lost and stops: no second version, promotion or index, and the
    task stays as B left it."""
    world.add_sessions(40)
    task, _ = world.store.create(new_task("m"))
    before = Before(world)
    frozen = subprocess.Popen(
        [sys.executable, "-m", SUPPORT, "pause-train"],
        env={**world.env, **SLOW_LEASE},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_stopped(frozen, 300)
        left = world.store.get(task.id)
        held = world.client.get(index=f"{world.store.index}-lease", id="tuner-worker")
        assert left.stage == Stage.training and held["_source"]["owner"] == left.worker
        standby = world.run_once(**SLOW_LEASE)  # stands by until A's lease expired, then takes over
        done = world.store.get(task.id)
        frozen.send_signal(signal.SIGCONT)
        out, err = frozen.communicate(timeout=300)
    finally:
        frozen.kill()  # SIGKILL also ends a stopped process
    assert "stopped" not in standby["tasks"][0], standby
    assert done.status == "done" and done.worker != left.worker and done.resumes == 1
    after = world.store.get(task.id)
    _assert_promoted_once(world, before, after)  # A woke up after B: nothing doubled by A
    assert (after.updated_at, after.history) == (done.updated_at, done.history), "A wrote"
    woken = json.loads(out.strip().splitlines()[-1])["tasks"][0]
    assert frozen.returncode == 0 and "lease" in woken["stopped"], err[-3000:]


# -- an OpenSearch outage in each stage --------------------------------------------------------
OUTAGE_S = 3.0
FAULT_ENV = {
    "CLICKTUNE_TUNER__WORKER__LEASE_S": "20",  # longer than the outage: no lease lost to it
    "CLICKTUNE_TUNER__WORKER__RETRY_INITIAL_S": "0.5",
    "CLICKTUNE_TUNER__WORKER__RETRY_MAX_S": "2",
    "CLICKTUNE_TUNER__WORKER__STAGE_DEADLINE_S": "60",  # 20 times the outage
}
# cut -> (the stage the task is stored in during the outage, where the outage starts)
CUTS: dict[str, tuple[Stage, Callable[[TaskRequests], Trip]]] = {
    # the first read of the UBI indexes for the batch's sessions
    "releasing": (Stage.releasing, lambda r: r.after("releasing", any_request)),
    # the batch's sessions read again from the UBI indexes, before the model trains
    "training": (Stage.training, lambda r: r.after("training", any_request)),
    # the version is in the registry (files, no request); storing `registered` fails
    "registering": (Stage.training, lambda r: lambda q: r.stores(q, "registered")),
    # `registered` makes no request of its own but the fence's lease read and the write of
    # `reindexing`: cut at its start, the lease read between the two stages
    "registered": (Stage.registered, lambda r: r.answered("registered")),
    # the third bulk request: a partial index and its checkpoint exist
    "reindexing": (Stage.reindexing, lambda r: r.after("reindexing", bulk, count=3)),
    # both production aliases moved (document, registry); the candidate alias not yet removed
    "promoting": (Stage.promoting, after_alias_move),
}


def _proxy(settings: Settings) -> CuttingProxy:
    url = urlparse(settings.opensearch.url)
    if url.scheme != "http":
        pytest.skip(f"the proxy reads plain HTTP; OpenSearch is at {settings.opensearch.url}")
    return CuttingProxy((url.hostname or "127.0.0.1", url.port or 9200), OUTAGE_S)


@pytest.mark.parametrize("cut", list(CUTS))
def test_an_opensearch_outage_in_each_stage_is_retried_to_production(
    world: World, settings: Settings, cut: str
) -> None:
    """`clicktune tuner run` reaches OpenSearch through a proxy that cuts every connection and
    refuses new ones for 3 s at one request of one stage; the stage retries after a backoff and
    the task reaches production with one version, one index, one promotion. `registered` has
    no OpenSearch calls of its own (the fence's lease read, then the write of the next stage):
    the outage starts at its boundary, the lease read that follows storing it."""
    stage, trip = CUTS[cut]
    world.add_sessions(40)
    before = Before(world)
    proxy = _proxy(settings)
    proxy.arm(trip(TaskRequests(world.store.index, proxy.answers)))
    log = world.home / "tuner.log"
    task, _ = world.store.create(new_task("m"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "clicktune", "tuner", "run"],
        env={**world.env, **FAULT_ENV, "CLICKTUNE_OPENSEARCH__URL": proxy.url},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        deadline = time.monotonic() + 300
        while not proxy.cut.wait(0.5):
            unfinished = worker.poll() is None and not world.store.get(task.id).finished
            assert unfinished and time.monotonic() < deadline, f"no outage:\n{log.read_text()}"
        during = world.store.get(task.id)  # the worker cannot write while the outage lasts
        versions_during = _versions(world)
        assert not proxy.restored.is_set(), "the outage ended before the task was read"
        final = _wait_finished(world, task.id, worker, log.read_text, 300)
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        proxy.close()
    text = log.read_text()
    assert during.stage == stage, f"{cut}: cut by {proxy.cut_by} in {during.stage}"
    if cut == "registering":
        assert len(versions_during) == len(before.versions) + 1, versions_during
    assert f"task {task.id} {stage.value}: transient error (try 1)" in text, text[-3000:]
    assert final.resumes == 0
    _assert_promoted_once(world, before, final)


def _wait_finished(
    world: World, task_id: str, worker: subprocess.Popen, log: Callable[[], str], timeout_s: float
) -> TaskRecord:
    deadline = time.monotonic() + timeout_s
    while not (task := world.store.get(task_id)).finished:
        assert worker.poll() is None, f"the worker exited:\n{log()[-3000:]}"
        assert time.monotonic() < deadline, f"task {task.stage}:\n{log()[-3000:]}"
        time.sleep(0.5)
    return task


# -- a worker killed in the online test, a rollback, a cancel ----------------------------------
def _to_ab_running(world: World, env: dict[str, str]) -> tuple[TaskRecord, Before]:
    """A task run by `--once` up to its online test (the experiment started, undecided)."""
    world.add_sessions(40)
    task, _ = world.store.create(new_task("m"))
    before = Before(world)
    answer = world.run_once(**env)
    waiting = world.store.get(task.id)
    assert waiting.stage == Stage.ab_running and "experiment" in waiting.notes, answer
    return waiting, before


def _once_until_finished(world: World, task_id: str, env: dict[str, str]) -> TaskRecord:
    """Fresh `--once` workers, one after another, until the task is finished."""
    deadline = time.monotonic() + 150
    while not (task := world.store.get(task_id)).finished:
        assert time.monotonic() < deadline, f"still {task.stage}: {task.metrics.get('online')}"
        world.run_once(**env)
    return task


def test_a_worker_killed_in_the_online_test_is_resumed_to_a_decision(world: World) -> None:
    """Killed right after it saved the experiment (replicas serve it), before the task named
    it: fresh workers resume that experiment, not a second one, and promote on its clicks."""
    env = ab_env(world, **SLOW_LEASE)
    world.add_sessions(40)
    task, _ = world.store.create(new_task("m"))
    before = Before(world)
    killed = world.worker("ab_running", module=SUPPORT, env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    left = world.store.get(task.id)
    started = ExperimentStore(world.home / "models").load()
    assert left.stage == Stage.ab_running and "experiment" not in left.notes
    assert started is not None and started.candidate.model_version == left.version
    world.assert_nothing_half_done()

    replica = Replica(world, env)
    try:
        replica.ready()
        seen = replica.traffic(liked="candidate")
        assert seen.get("candidate", 0) >= 20 and seen.get("control", 0) >= 20, seen
        final = _once_until_finished(world, task.id, env)
    finally:
        replica.stop()
    assert final.stage == Stage.done and "CTR difference +" in str(final.reason), final.reason
    assert [h["stage"] for h in final.history][-3:] == ["ab_running", "promoting", "done"]
    assert final.notes["experiment"] == started.id
    assert _stopped_experiments(world) == [started.id]  # stopped, and the only one
    assert not world.client.indices.exists_alias(name=world.doc_index.settings.candidate_alias)
    _assert_promoted_once(world, before, final)


def test_a_worker_killed_rolling_back_is_resumed_to_the_rollback(world: World) -> None:
    """Killed after it stopped the experiment, before it removed the candidate alias: a fresh
    worker finishes the rollback; production, its history and the document alias as before;
    the candidate version is kept (a rollback archives nothing), its alias removed."""
    # undecided 3 s after it started: rolled back
    env = ab_env(world, CLICKTUNE_TUNER__WORKER__AB_MAX_S="3", **SLOW_LEASE)
    waiting, before = _to_ab_running(world, env)
    time.sleep(max(0.0, float(waiting.notes["ab_started_at"]) + 3.5 - time.time()))
    killed = world.worker("rolling_back", module=SUPPORT, env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    left = world.store.get(waiting.id)
    assert left.stage == Stage.rolling_back and "no decision after" in str(left.reason)
    assert ExperimentStore(world.home / "models").load() is None
    assert world.client.indices.exists_alias(name=world.doc_index.settings.candidate_alias)

    world.run_once(**env)
    final = world.store.get(waiting.id)
    assert final.stage == Stage.rejected and final.resumes == 1, final.reason
    assert "no decision after" in str(final.reason)
    _assert_production_kept(world, before)
    assert _versions(world) == [*before.versions, final.version]
    assert _stopped_experiments(world) == [waiting.notes["experiment"]]


def test_a_worker_killed_canceling_is_resumed_to_the_cancel(world: World) -> None:
    """A task canceled in its online test; the worker cleaning up is killed after it archived
    the version, before it deleted the version's index: a fresh worker finishes the cancel,
    the version archived and its index deleted, production as before."""
    env = ab_env(world, **SLOW_LEASE)
    waiting, before = _to_ab_running(world, env)
    version = str(waiting.version)
    assert len(_indexes(world, version)) == 1
    cancel_task(world.store, waiting.id)
    killed = world.worker("canceling", module=SUPPORT, env=env)
    assert killed.returncode == -9, killed.stderr[-3000:]
    left = world.store.get(waiting.id)
    assert left.stage == Stage.canceling and version not in _versions(world)

    world.run_once(**env)
    final = world.store.get(waiting.id)
    assert final.stage == Stage.canceled, final.reason
    assert _versions(world) == before.versions
    assert list((world.home / "models" / "archived").glob(f"*/{version}"))
    assert _indexes(world, version) == [], "the canceled version's index is left"
    assert _indexes(world) == before.indexes
    _assert_production_kept(world, before)
    assert _stopped_experiments(world) == [waiting.notes["experiment"]]
