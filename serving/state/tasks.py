"""Fine-tuning tasks: the record, the table of allowed stage transitions, a durable store.

A task is one iteration of the loop. Its `stage` is clicktune's state machine; its `status` is
the Embedding Studio view of the same state (pending, processing, done, canceled, error,
rejected) and is derived from the stage, never set on its own:

    queued -> releasing -> training -> registered -> reindexing -> promoting -> done
                               |                         |  \\-> ab_running -> promoting
                               +-> rejected (gate)       |         \\-> rolling_back -> rejected
    any unfinished stage -> failed (error);  queued .. ab_running -> canceling -> canceled

Every transition is written (refresh=wait_for) before the work of the new stage starts, with
optimistic concurrency (`if_seq_no` / `if_primary_term`): two writers that read the same state
cannot both move it, so two workers never both take a task, and a cancel that lands while a
worker runs a stage makes the worker's next write fail and the worker stop.

The store is an OpenSearch index (`tuner.worker.tasks_index`); the serving app's task API and
the tuner worker both use it, which is why it lives in `serving`.
"""

from __future__ import annotations

import builtins
import hashlib
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConflictError, NotFoundError, OpenSearchException
from pydantic import BaseModel, Field, PrivateAttr

from ingest.index_layout import create_internal_index
from serving.errors import ServingError

__all__ = [
    "CANCELABLE",
    "STATUS_OF",
    "TERMINAL",
    "TRANSITIONS",
    "OpenSearchTaskStore",
    "Stage",
    "TaskConflictError",
    "TaskError",
    "TaskNotFoundError",
    "TaskRecord",
    "TaskStatus",
    "TaskTransitionError",
    "cancel_task",
    "check_transition",
    "new_task",
]


class TaskError(ServingError):
    """A fine-tuning task cannot be stored, read or moved as asked."""


class TaskNotFoundError(TaskError):
    """No task has the given id."""


class TaskConflictError(TaskError):
    """Someone else changed the task since it was read (another worker, a cancel)."""


class TaskTransitionError(TaskError):
    """The state table does not allow the asked stage change."""


class TaskStatus(StrEnum):
    """Embedding Studio's task status."""

    pending = "pending"
    processing = "processing"
    done = "done"
    canceled = "canceled"
    error = "error"
    rejected = "rejected"


class Stage(StrEnum):
    """Where a task stands in the loop (clicktune's own, finer than the status)."""

    queued = "queued"
    releasing = "releasing"
    training = "training"
    registered = "registered"
    reindexing = "reindexing"
    ab_running = "ab_running"
    promoting = "promoting"
    rolling_back = "rolling_back"
    canceling = "canceling"
    done = "done"
    rejected = "rejected"
    canceled = "canceled"
    failed = "failed"


S = Stage
# The one table of allowed transitions: stage -> the stages it may move to.
TRANSITIONS: dict[Stage, frozenset[Stage]] = {
    S.queued: frozenset({S.releasing, S.training, S.canceled, S.failed}),
    S.releasing: frozenset({S.training, S.canceling, S.failed}),
    S.training: frozenset({S.registered, S.rejected, S.canceling, S.failed}),
    S.registered: frozenset({S.reindexing, S.ab_running, S.promoting, S.canceling, S.failed}),
    S.reindexing: frozenset({S.ab_running, S.promoting, S.canceling, S.failed}),
    S.ab_running: frozenset({S.promoting, S.rolling_back, S.canceling, S.failed}),
    S.promoting: frozenset({S.done, S.failed}),
    S.rolling_back: frozenset({S.rejected, S.failed}),
    S.canceling: frozenset({S.canceled, S.failed}),
    S.done: frozenset(),
    S.rejected: frozenset(),
    S.canceled: frozenset(),
    S.failed: frozenset(),
}
STATUS_OF: dict[Stage, TaskStatus] = {
    **{stage: TaskStatus.processing for stage in Stage},
    S.queued: TaskStatus.pending,
    S.canceling: TaskStatus.canceled,  # the user's view: canceled; the worker still cleans up
    S.done: TaskStatus.done,
    S.rejected: TaskStatus.rejected,
    S.canceled: TaskStatus.canceled,
    S.failed: TaskStatus.error,
}
# A cancel goes straight to `canceled` from `queued` (nothing ran), else through `canceling`.
CANCELABLE = frozenset(s for s, nexts in TRANSITIONS.items() if {S.canceled, S.canceling} & nexts)
TERMINAL = frozenset(s for s, nexts in TRANSITIONS.items() if not nexts)


def check_transition(current: Stage, target: Stage) -> None:
    """Raise `TaskTransitionError` unless the table allows `current -> target`."""
    if target not in TRANSITIONS[current]:
        allowed = sorted(str(s) for s in TRANSITIONS[current]) or ["nothing: it is final"]
        raise TaskTransitionError(
            f"a task in stage {current.value!r} cannot move to {target.value!r}; "
            f"allowed: {', '.join(allowed)}"
        )


def _now() -> datetime:
    return datetime.now(UTC)


class TaskRecord(BaseModel):
    """One fine-tuning task as stored (and as the API shows it, see `as_dict`)."""

    id: str
    fine_tuning_method: str
    status: TaskStatus = TaskStatus.pending
    stage: Stage = Stage.queued
    batch_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    metrics: dict[str, Any] = Field(default_factory=dict)
    version: str | None = None
    reason: str | None = None
    worker: str | None = None
    resumes: int = 0
    notes: dict[str, Any] = Field(
        default_factory=dict, description="what a resumed stage needs (counts seen at its start)"
    )
    history: list[dict[str, Any]] = Field(default_factory=list)
    _seq: tuple[int, int] | None = PrivateAttr(default=None)

    @property
    def finished(self) -> bool:
        return self.stage in TERMINAL

    def as_dict(self) -> dict[str, Any]:
        """The JSON the API answers with (Embedding Studio's fields plus clicktune's)."""
        return self.model_dump(mode="json")


def new_task(
    fine_tuning_method: str,
    batch_id: str | None = None,
    metadata: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> TaskRecord:
    """A queued task; its id is derived from the idempotency key when there is one."""
    task_id = (
        "k" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:31]
        if idempotency_key
        else uuid.uuid4().hex
    )
    record = TaskRecord(
        id=task_id,
        fine_tuning_method=fine_tuning_method,
        batch_id=batch_id,
        metadata=dict(metadata or {}),
        idempotency_key=idempotency_key,
    )
    record.history.append({"stage": Stage.queued.value, "at": record.created_at.isoformat()})
    return record


_KEYWORDS = ("id", "fine_tuning_method", "status", "stage", "batch_id", "idempotency_key")
MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        **{name: {"type": "keyword"} for name in (*_KEYWORDS, "version", "worker")},
        "created_at": {"type": "date"},
        "updated_at": {"type": "date"},
    },
}


class OpenSearchTaskStore:
    """Tasks as documents of one OpenSearch index, written with optimistic concurrency."""

    def __init__(self, client: OpenSearch, index: str, replicas: int | str = "0-1") -> None:
        """`replicas`: a count or an auto-expand range (`opensearch.internal_replicas`)."""
        self.client = client
        self.index = index
        self.replicas = replicas
        self._ready = False

    def ensure_index(self) -> None:
        """Create the index (keyword mappings for the filters) unless it exists."""
        if self._ready:
            return
        try:
            create_internal_index(self.client, self.index, self.replicas, MAPPINGS)
        except OpenSearchException as exc:
            raise TaskError(f"cannot create the task index {self.index!r}: {exc}") from exc
        self._ready = True

    def create(self, task: TaskRecord) -> tuple[TaskRecord, bool]:
        """Store a new task; with an idempotency key already used, the existing task instead.

        Returns (task, created)."""
        self.ensure_index()
        try:
            answer = self.client.index(
                index=self.index,
                id=task.id,
                body=task.as_dict(),
                params={"op_type": "create", "refresh": "wait_for"},
            )
        except ConflictError:
            existing = self.get(task.id)
            return existing, False
        except OpenSearchException as exc:
            raise TaskError(f"cannot store task {task.id!r} in {self.index!r}: {exc}") from exc
        task._seq = (answer["_seq_no"], answer["_primary_term"])
        return task, True

    def get(self, task_id: str) -> TaskRecord:
        """The task `task_id` as stored now."""
        self.ensure_index()
        try:
            found = self.client.get(index=self.index, id=task_id)
        except NotFoundError as exc:
            raise TaskNotFoundError(f"no fine-tuning task with id {task_id!r}") from exc
        except OpenSearchException as exc:
            raise TaskError(f"cannot read task {task_id!r} from {self.index!r}: {exc}") from exc
        return _record(found)

    def list(
        self,
        status: TaskStatus | str | None = None,
        limit: int = 20,
        offset: int = 0,
        *,
        stages: list[Stage] | None = None,
        oldest_first: bool = False,
    ) -> list[TaskRecord]:
        """Tasks, newest first (or oldest first), optionally of one status or some stages."""
        self.ensure_index()
        filters: list[dict[str, Any]] = []
        if status is not None:
            filters.append({"term": {"status": TaskStatus(status).value}})
        if stages is not None:
            filters.append({"terms": {"stage": [s.value for s in stages]}})
        body = {
            "query": {"bool": {"filter": filters}},
            "sort": [{"created_at": "asc" if oldest_first else "desc"}, {"id": "asc"}],
            "from": offset,
            "size": limit,
            "seq_no_primary_term": True,
        }
        try:
            self.client.indices.refresh(index=self.index)
            hits = self.client.search(index=self.index, body=body)["hits"]["hits"]
        except OpenSearchException as exc:
            raise TaskError(f"cannot list tasks in {self.index!r}: {exc}") from exc
        return [_record(hit) for hit in hits]

    def unfinished(self) -> builtins.list[TaskRecord]:
        """Tasks that are queued or under way (canceling included), oldest first."""
        open_stages = [s for s in Stage if s not in TERMINAL]
        return self.list(stages=open_stages, limit=100, oldest_first=True)

    def move(
        self, task: TaskRecord, stage: Stage, worker: str | None = None, **changes: Any
    ) -> TaskRecord:
        """Store `task` moved to `stage` (with `changes`) if nobody changed it since it was read.

        Raises `TaskTransitionError` (not allowed by the table) or `TaskConflictError`."""
        check_transition(task.stage, stage)
        now = _now()
        entry = {"stage": stage.value, "at": now.isoformat()}
        if worker is not None:
            entry["worker"] = worker
        if changes.get("reason"):
            entry["reason"] = changes["reason"]
        moved = task.model_copy(
            update={
                **changes,
                "stage": stage,
                "status": STATUS_OF[stage],
                "updated_at": now,
                "worker": worker if worker is not None else task.worker,
                "history": [*task.history, entry],
            },
            deep=True,
        )
        return self._replace(task, moved)

    def update(self, task: TaskRecord, **changes: Any) -> TaskRecord:
        """Store changes that keep the stage (notes, metrics), with the same concurrency check."""
        moved = task.model_copy(update={**changes, "updated_at": _now()}, deep=True)
        return self._replace(task, moved)

    def _replace(self, old: TaskRecord, new: TaskRecord) -> TaskRecord:
        if old._seq is None:
            raise TaskError(f"task {old.id!r} was not read from the store; read it first")
        seq_no, primary_term = old._seq
        try:
            answer = self.client.index(
                index=self.index,
                id=old.id,
                body=new.as_dict(),
                params={
                    "if_seq_no": seq_no,
                    "if_primary_term": primary_term,
                    "refresh": "wait_for",
                },
            )
        except ConflictError as exc:
            raise TaskConflictError(
                f"task {old.id!r} changed since it was read in stage {old.stage.value!r} "
                "(another worker or a cancel); read it again"
            ) from exc
        except OpenSearchException as exc:
            raise TaskError(f"cannot store task {old.id!r} in {self.index!r}: {exc}") from exc
        new._seq = (answer["_seq_no"], answer["_primary_term"])
        return new


def _record(hit: dict[str, Any]) -> TaskRecord:
    record = TaskRecord.model_validate(hit["_source"])
    record._seq = (hit["_seq_no"], hit["_primary_term"])
    return record


def cancel_task(store: OpenSearchTaskStore, task_id: str, attempts: int = 3) -> TaskRecord:
    """Cancel a task: a queued one at once, a running one through `canceling` (the worker
    stops before its next stage and cleans up). Finished or promoting: `TaskTransitionError`."""
    for _ in range(attempts):
        task = store.get(task_id)
        if task.stage in (Stage.canceling, Stage.canceled):
            return task
        if task.stage not in CANCELABLE:
            raise TaskTransitionError(
                f"task {task_id!r} is {task.stage.value!r} and can no longer be canceled; "
                f"cancelable stages: {', '.join(sorted(s.value for s in CANCELABLE))}"
            )
        target = Stage.canceled if task.stage == Stage.queued else Stage.canceling
        try:
            return store.move(task, target, reason="canceled on request")
        except TaskConflictError:
            continue  # the worker moved it meanwhile: look again
    raise TaskConflictError(f"task {task_id!r} kept changing; {attempts} cancel attempts lost")
