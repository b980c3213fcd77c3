"""Run one fine-tuning task stage by stage; resume or fail a task a dead worker left behind.

The runner stores every transition (`OpenSearchTaskStore.move`) before it starts the new
stage's work, and does each stage's work through `Stages` (the real ones in `stages.py`), so
the stored stage always names the work that may be half done. A task found in a running stage
whose worker is not this one was left by a dead worker: the stage is resumed (each stage's work
is safe to run again) at most `max_resumes` times, then the task fails with the reason.

A cancel moves the task to `canceling` behind the worker's back; the worker's next write then
conflicts, it reads the task again, cleans up (the version registered for it included) and
stores `canceled`. During training the runner also looks at every progress message, so a cancel
stops training at the next one.

Fencing: before every stage's work and every write the runner checks its lease `Fence`, and a
task read again that another worker has taken meanwhile (its `worker` changed to another id) is
left alone: `LeaseLostError`, nothing touched. A training stage found half done adopts only a
version whose registry metadata names this task.

A query model ("query model X over document model Y", `Stages.needs_reindex` false) searches the
live index's vectors: the task goes from `registered` straight to the online test or the
promotion, which moves the registry alias alone, and records `reindexed: false`.

Transient errors (`retry.is_transient`: OpenSearch unreachable, 429/5xx, retriable Kafka errors)
are retried inside the stage after a capped exponential backoff (`retry_initial_s` doubling up
to `retry_max_s`); the task fails when they last `stage_deadline_s` past the stage's first one,
and that failure keeps an interrupted reindex's checkpoint for a later run to resume or abandon.
Any other error fails the task at once, after cleaning up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from serving.state.tasks import (
    OpenSearchTaskStore,
    Stage,
    TaskConflictError,
    TaskError,
    TaskRecord,
)
from tuner import progress
from tuner.config import RolloutMode, WorkerSettings
from tuner.gate import Verdict
from tuner.iteration import Notify
from tuner.worker.lock import NO_FENCE, Fence, LeaseLostError
from tuner.worker.retry import backoff, is_transient
from tuner.worker.stages import OnlineCheck, TrainOutcome

__all__ = ["LeaseLostError", "Stages", "TaskRunner"]

log = logging.getLogger(__name__)
# Stages with no work in flight: nothing started yet (queued), or waiting for the A/B policy
# between polls (any worker may look next, e.g. successive `--once` runs); not "resumes".
_NO_WORK = {Stage.queued, Stage.ab_running}


class Stages(Protocol):
    """The work of each stage (`tuner.worker.stages.LoopStages`)."""

    def batch_count(self) -> int: ...
    def release(self, batches_before: int) -> str: ...
    def versions(self, task_id: str | None = None) -> list[str]: ...
    def train(self, batch_id: str, notify: Notify, task_id: str | None = None) -> TrainOutcome: ...
    def adopt(self, version: str) -> None: ...
    def needs_reindex(self, version: str) -> bool: ...
    def reindex(self, version: str) -> str: ...
    def start_ab(self, version: str, traffic: float, mode: str) -> str: ...
    def ab_decision(
        self, started_at: float, max_s: float, max_queries: int | None = None
    ) -> OnlineCheck: ...
    def promote(self, version: str) -> dict[str, Any]: ...
    def clean_up(
        self, version: str | None, *, drop_version: bool = False, keep_checkpoint: bool = False
    ) -> list[str]: ...


class _Stopped(Exception):
    """Raised from a progress message when the task was canceled."""


class _DeadlinePassed(Exception):
    """A stage kept meeting transient errors past `stage_deadline_s`."""


class TaskRunner:
    """Takes one task from its stored stage to a final stage (or to a wait, in an A/B test)."""

    def __init__(
        self,
        store: OpenSearchTaskStore,
        stages: Stages,
        settings: WorkerSettings,
        worker_id: str,
        fence: Fence = NO_FENCE,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store, self.stages, self.settings = store, stages, settings
        self.worker_id, self.fence, self.clock = worker_id, fence, clock
        self.monotonic, self.sleep = monotonic, sleep
        self._handlers: dict[Stage, Callable[[TaskRecord], TaskRecord | None]] = {
            Stage.queued: self._start,
            Stage.releasing: self._release,
            Stage.training: self._train,
            Stage.registered: self._registered,
            Stage.reindexing: self._reindex,
            Stage.ab_running: self._ab,
            Stage.promoting: self._promote,
            Stage.rolling_back: self._roll_back,
            Stage.canceling: self._cancel,
        }

    def run(self, task: TaskRecord) -> TaskRecord:
        """Drive `task` until it is final or waits for the A/B policy; return it as stored.

        Raises `LeaseLostError` when the lease is lost or another worker took the task."""
        self.fence.check(f"taking task {task.id}")
        task = self._take(task)
        while not task.finished:
            try:
                moved = self._attempt(task)
            except (TaskConflictError, _Stopped):
                moved = self._reread(task)  # a cancel (or another writer): look again
            except TaskError:
                raise  # the store itself is unreachable, or the lease lost: nothing to record
            except _DeadlinePassed as exc:
                log.error("task %s failed in %s: %s", task.id, task.stage.value, exc)
                reason = f"{task.stage.value}: {exc}"
                moved = self._fail(self._reread(task), reason, keep_checkpoint=True)
            except Exception as exc:  # noqa: BLE001 - any failure of a stage ends the task
                log.exception("task %s failed in %s", task.id, task.stage.value)
                moved = self._fail(self._reread(task), f"{task.stage.value}: {exc}")
            if moved is None:
                return self.store.get(task.id)  # waiting for the A/B policy: next poll again
            task = moved
        log.info("task %s %s: %s", task.id, task.stage.value, task.reason or "")
        return task

    def _attempt(self, task: TaskRecord) -> TaskRecord | None:
        """The stage's work, retried after a transient error until `stage_deadline_s` passed
        since the first one. The fence's read of the lease before it is retried too: an
        outage that starts between two stages is the next stage's to wait out."""
        first_failure: float | None = None
        attempt = 0
        while True:
            try:
                if attempt:
                    task = self._reread(task)  # a failed try may have stored notes meanwhile
                    self.fence.check(f"retrying task {task.id} in {task.stage.value!r}")
                    if task.finished:
                        return task
                else:
                    self.fence.check(f"running task {task.id} in {task.stage.value!r}")
                with progress.reporting(self._progress_log(task)):
                    return self._handlers[task.stage](task)
            except (TaskConflictError, LeaseLostError, _Stopped):
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise
                attempt += 1
                now = self.monotonic()
                first_failure = now if first_failure is None else first_failure
                deadline = self.settings.stage_deadline_s
                if now - first_failure >= deadline:
                    raise _DeadlinePassed(
                        f"transient errors for {now - first_failure:.0f} s, {attempt} tries "
                        f"(stage_deadline_s={deadline:g}); last: {exc}"
                    ) from exc
                wait = backoff(attempt, self.settings.retry_initial_s, self.settings.retry_max_s)
                log.warning(
                    "task %s %s: transient error (try %d), retrying in %.1f s: %s",
                    task.id,
                    task.stage.value,
                    attempt,
                    wait,
                    exc,
                )
                self.sleep(wait)

    def _reread(self, task: TaskRecord) -> TaskRecord:
        """The task as stored now; `LeaseLostError` if another worker has taken it since."""
        stored = self.store.get(task.id)
        taken = stored.worker not in (task.worker, self.worker_id) and not stored.finished
        if taken:
            raise LeaseLostError(
                f"task {task.id} is now run by worker {stored.worker} "
                f"(stage {stored.stage.value!r}); {self.worker_id} stops"
            )
        return stored

    # -- taking and resuming ----------------------------------------------------------------
    def _take(self, task: TaskRecord) -> TaskRecord:
        if task.finished or task.stage in _NO_WORK or task.worker == self.worker_id:
            return task
        resumes = task.resumes + 1
        if resumes > self.settings.max_resumes and task.stage != Stage.canceling:
            return self._fail(
                task,
                f"worker {task.worker} died in stage {task.stage.value!r}; resumed "
                f"{task.resumes} times already (max_resumes={self.settings.max_resumes})",
            )
        log.warning(
            "resuming task %s in stage %s left by worker %s (resume %d)",
            task.id,
            task.stage.value,
            task.worker,
            resumes,
        )
        self.fence.check(f"resuming task {task.id}")
        return self.store.update(task, resumes=resumes, worker=self.worker_id)

    def _fail(self, task: TaskRecord, reason: str, keep_checkpoint: bool = False) -> TaskRecord:
        if task.finished:
            return task
        cleaned = self._clean(task, keep_checkpoint)
        if cleaned:
            reason = f"{reason} (cleaned up: {', '.join(cleaned)})"
        return self._move(task, Stage.failed, reason=reason)

    def _clean(self, task: TaskRecord, keep_checkpoint: bool) -> list[str]:
        if task.stage in (Stage.queued, Stage.promoting):
            return []  # nothing started / the promotion is one step that Rollout finishes
        try:
            self.fence.check(f"cleaning up after task {task.id}")
            return self.stages.clean_up(task.version, keep_checkpoint=keep_checkpoint)
        except LeaseLostError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed cleanup must not hide the reason
            log.exception("cleanup of task %s failed", task.id)
            return [f"cleanup failed: {exc}"]

    # -- one handler per stage: do the stage's work, then store the next stage --------------
    def _start(self, task: TaskRecord) -> TaskRecord:
        self.fence.check(f"starting task {task.id}")
        if task.batch_id is None:
            notes = {"batches_before": self.stages.batch_count()}
            return self._move(task, Stage.releasing, notes=notes)
        return self._move(task, Stage.training, notes={"versions_before": self.stages.versions()})

    def _release(self, task: TaskRecord) -> TaskRecord:
        self.fence.check(f"releasing a batch for task {task.id}")
        batch_id = self.stages.release(int(task.notes.get("batches_before", 0)))
        notes = {**task.notes, "versions_before": self.stages.versions()}
        return self._move(task, Stage.training, batch_id=batch_id, notes=notes)

    def _train(self, task: TaskRecord) -> TaskRecord:
        before = set(task.notes.get("versions_before", []))
        orphans = [v for v in self.stages.versions(task.id) if v not in before]
        # Training was stored before this call: a worker (a dead one, this one before it lost
        # the lease, or this one before a transient error failed storing `registered` and the
        # stage was tried again) may have registered the candidate without the task knowing.
        # Only a version whose metadata names this task is its candidate: any other passed
        # another task's gate, or none.
        if orphans:
            version = orphans[-1]
            self.fence.check(f"adopting {version} for task {task.id}")
            self.stages.adopt(version)
            return self._move(
                task,
                Stage.registered,
                version=version,
                reason="adopted: registered before the task stored it",
            )
        self.fence.check(f"training for task {task.id}")
        outcome = self.stages.train(str(task.batch_id), self._watch(task), task.id)
        metrics = {**task.metrics, **outcome.metrics}
        if outcome.status != "done" or outcome.version is None:
            return self._move(task, Stage.rejected, metrics=metrics, reason=outcome.reason)
        return self._move(
            task, Stage.registered, version=outcome.version, metrics=metrics, reason=outcome.reason
        )

    def _registered(self, task: TaskRecord) -> TaskRecord:
        if self.stages.needs_reindex(str(task.version)):
            return self._move(task, Stage.reindexing)
        # A query model searches the live index's vectors: no reindex, straight on to the
        # online test or the promotion, which moves the registry alias alone.
        metrics = {**task.metrics, "reindexed": False}
        next_stage = Stage.ab_running if self._online_test(task) else Stage.promoting
        return self._move(task, next_stage, metrics=metrics)

    def _reindex(self, task: TaskRecord) -> TaskRecord:
        self.fence.check(f"reindexing for task {task.id}")
        index = self.stages.reindex(str(task.version))
        metrics = {**task.metrics, "index": index}
        if self._online_test(task):
            return self._move(task, Stage.ab_running, metrics=metrics)
        return self._move(task, Stage.promoting, metrics=metrics)

    def _online_test(self, task: TaskRecord) -> bool:
        """Whether the candidate goes through the online test: always with rollout ab, never with
        promote; with two_stage unless the offline stage found strong evidence of a gain."""
        rollout = self.settings.rollout
        if rollout == RolloutMode.two_stage:
            return task.metrics.get("verdict") != Verdict.promote.value
        return rollout == RolloutMode.ab

    def _ab(self, task: TaskRecord) -> TaskRecord | None:
        if "experiment" not in task.notes:
            two_stage = self.settings.rollout == RolloutMode.two_stage
            mode = "interleave" if two_stage else self.settings.ab_mode
            self.fence.check(f"starting the experiment of task {task.id}")
            experiment = self.stages.start_ab(str(task.version), self.settings.ab_traffic, mode)
            notes = {**task.notes, "experiment": experiment, "ab_started_at": self.clock()}
            self.fence.check(f"storing the experiment of task {task.id}")
            task = self.store.update(task, notes=notes)
        check = self.stages.ab_decision(
            float(task.notes["ab_started_at"]),
            self.settings.ab_max_s,
            self.settings.ab_max_queries,
        )
        line = self._online_line(task, check)
        log.info("task %s: %s; %s: %s", task.id, line, check.action, check.reason)
        metrics = {**task.metrics, "online": {**check.tally, "decision": check.action}}
        if check.action == "promote":
            return self._move(task, Stage.promoting, reason=check.reason, metrics=metrics)
        if check.action == "rollback":
            return self._move(task, Stage.rolling_back, reason=check.reason, metrics=metrics)
        self.fence.check(f"storing the online tally of task {task.id}")
        self.store.update(task, metrics=metrics)
        return None

    def _promote(self, task: TaskRecord) -> TaskRecord:
        self.fence.check(f"promoting {task.version} for task {task.id}")
        rollout = self.stages.promote(str(task.version))
        return self._move(task, Stage.done, metrics={**task.metrics, "rollout": rollout})

    def _roll_back(self, task: TaskRecord) -> TaskRecord:
        self.fence.check(f"rolling back task {task.id}")
        self.stages.clean_up(task.version)
        return self._move(task, Stage.rejected, reason=task.reason)

    def _cancel(self, task: TaskRecord) -> TaskRecord:
        self.fence.check(f"cleaning up canceled task {task.id}")
        # The version registered for a canceled task was never wanted: it goes too.
        cleaned = self.stages.clean_up(task.version, drop_version=True)
        reason = "canceled on request" + (f" (cleaned up: {', '.join(cleaned)})" if cleaned else "")
        return self._move(task, Stage.canceled, reason=reason)

    def _move(self, task: TaskRecord, stage: Stage, **changes: Any) -> TaskRecord:
        self.fence.check(f"storing task {task.id} as {stage.value!r}")
        moved = self.store.move(task, stage, self.worker_id, **changes)
        log.info("task %s: %s -> %s", task.id, task.stage.value, stage.value)
        return moved

    def _online_line(self, task: TaskRecord, check: OnlineCheck) -> str:
        """The online test so far: searches against the budget, their rate, the time left
        (the budget at this rate, at most what `ab_max_s` leaves), wins / losses / ties."""
        elapsed = self.clock() - float(task.notes["ab_started_at"])
        tally = dict(check.tally)
        searches = tally.pop("searches", 0)
        return progress.progress_line(
            "online_test",
            "search",
            searches,
            self.settings.ab_max_queries,
            elapsed,
            rate_unit="searches",
            eta_cap_s=self.settings.ab_max_s - elapsed,
            extra=tally,
        )

    def _progress_log(self, task: TaskRecord) -> progress.ProgressLog:
        """Where the task's long stages log progress (`tuner.progress`); each line also checks
        the lease, locally: a line every few seconds must cost no request, and a blip of the
        task store must not fail a long training (a cancel is seen at the next `_watch`)."""

        def say(line: str) -> None:
            log.info("task %s: %s", task.id, line)
            if self.fence.is_lost():
                raise LeaseLostError(f"lease lost while task {task.id} ran: {line}")

        return progress.ProgressLog(say, self.settings.progress_interval_s, self.monotonic)

    def _watch(self, task: TaskRecord) -> Notify:
        """Progress messages of training, each one also a chance to notice a cancel."""

        def notify(message: str) -> None:
            log.info("task %s: %s", task.id, message)
            if self.fence.is_lost():
                raise LeaseLostError(f"lease lost while task {task.id} trained: {message}")
            if self._reread(task).stage != task.stage:
                raise _Stopped(message)

        return notify
