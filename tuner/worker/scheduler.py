"""The worker process: APScheduler runs a trigger job and a task job; the lease gates both.

The jobs live in a persistent SQLAlchemy job store (SQLite under `$CLICKTUNE_HOME/tuner/`), each
with `max_instances=1` and `coalesce=True`: a restarted worker picks its schedule up again, a
late run is run once, never twice at a time. A job refers to a module-level function by name
(so it can be stored); the function finds this process's `TunerWorker` in `_WORKER`.

Each tick first takes (or renews) the lease: a worker that does not hold it stands by and tries
again at the next tick, so a standby takes over `lease_s` after the holder died. The tasks of a
tick run behind the `Fence` of that tenure (`lock.py`): once it is lost they stop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from serving.state.tasks import OpenSearchTaskStore, TaskRecord, new_task
from tuner.batches import Batches
from tuner.config import WorkerSettings
from tuner.worker import trigger
from tuner.worker.lock import Fence, Heartbeat, Lease, LeaseLostError
from tuner.worker.runner import TaskRunner

__all__ = ["TunerWorker", "run_scheduler", "worker_id"]

log = logging.getLogger(__name__)
TRIGGER_JOB, TASK_JOB = "clicktune-trigger", "clicktune-tasks"
_WORKER: TunerWorker | None = None


def worker_id() -> str:
    """A name unique to this process: host, pid and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class TunerWorker:
    """One worker: trigger checks and task runs, each only while it holds the lease."""

    def __init__(
        self,
        store: OpenSearchTaskStore,
        lease: Lease,
        batches: Batches,
        counter: trigger.SessionCounter,
        runner_for: Callable[[Fence], TaskRunner],
        settings: WorkerSettings,
        grace: timedelta,
    ) -> None:
        self.store, self.lease, self.batches, self.counter = store, lease, batches, counter
        self.runner_for, self.settings, self.grace = runner_for, settings, grace
        self._tasks = threading.Lock()  # one task at a time in this process

    def check_trigger(self) -> dict[str, Any]:
        """Queue a task when the trigger says so; the decision (with counts) is returned."""
        if not self.lease.acquire():
            return self._standby()
        fence = self.lease.fence()
        busy = self.store.unfinished()
        decision = trigger.check(
            self.batches,
            self.counter,
            self.settings,
            datetime.now(UTC),
            self.grace,
            busy=f"task {busy[0].id} is {busy[0].stage.value}" if busy else None,
        )
        answer: dict[str, Any] = {"trigger": decision.as_dict()}
        if decision.fire:
            metadata = {"trigger": decision.as_dict()}
            try:
                fence.check("queuing a task")
            except LeaseLostError as exc:
                log.error("%s", exc)
                return {**answer, "stopped": str(exc)}
            task, _ = self.store.create(new_task(self.settings.fine_tuning_method, None, metadata))
            log.info("trigger queued task %s", task.id)
            answer["queued"] = task.id
        return answer

    def run_tasks(self, limit: int | None = None) -> dict[str, Any]:
        """Run unfinished tasks one at a time, oldest first (at most `limit`), holding the
        lease; a task that waits (A/B test running) holds the others back."""
        if not self._tasks.acquire(blocking=False):
            return {"tasks": [], "busy": True}
        try:
            if not self.lease.acquire():
                return self._standby()
            done: list[dict[str, Any]] = []
            fence = self.lease.fence()
            with Heartbeat(fence):
                runner = self.runner_for(fence)
                for task in self.store.unfinished()[:limit]:
                    done.append(self._run_one(runner, task))
                    if fence.is_lost() or done[-1]["status"] in ("pending", "processing"):
                        break
            return {"tasks": done}
        finally:
            self._tasks.release()

    def tick(self) -> dict[str, Any]:
        """One trigger check, then at most one task (what `clicktune tuner run --once` does)."""
        answer = self.check_trigger() if self.settings.trigger_enabled else {}
        if answer.get("standby"):
            return answer
        return {**answer, **self.run_tasks(limit=1)}

    def _run_one(self, runner: TaskRunner, task: TaskRecord) -> dict[str, Any]:
        try:
            final = runner.run(task)
        except LeaseLostError as exc:
            log.error("%s", exc)
            return {**task.as_dict(), "stopped": str(exc)}
        return final.as_dict()

    def _standby(self) -> dict[str, Any]:
        holder = self.lease.holder() or {}
        log.info(
            "standing by: lease held by %s until %s",
            holder.get("owner"),
            holder.get("expires_at"),
        )
        return {"standby": True, "lease": holder}


def _trigger_job() -> None:
    if _WORKER is not None and _WORKER.settings.trigger_enabled:
        _WORKER.check_trigger()


def _task_job() -> None:
    if _WORKER is not None:
        _WORKER.run_tasks()


def run_scheduler(worker: TunerWorker, jobs_db: Path) -> None:
    """Run the trigger and task jobs every `poll_s` until interrupted; release the lease."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.blocking import BlockingScheduler

    global _WORKER
    _WORKER = worker
    jobs_db.parent.mkdir(parents=True, exist_ok=True)
    scheduler = BlockingScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{jobs_db}")},
        executors={"default": ThreadPoolExecutor(2)},
        job_defaults={"coalesce": True, "max_instances": 1},
        timezone=UTC,
    )
    poll = worker.settings.poll_s
    for job_id, function in ((TRIGGER_JOB, _trigger_job), (TASK_JOB, _task_job)):
        scheduler.add_job(
            function,
            "interval",
            seconds=poll,
            id=job_id,
            replace_existing=True,
            next_run_time=datetime.now(UTC),
            misfire_grace_time=max(1, int(poll)),
        )
    log.info("tuner worker %s: trigger and task jobs every %.0f s", worker.lease.owner, poll)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        worker.lease.release()
        _WORKER = None
