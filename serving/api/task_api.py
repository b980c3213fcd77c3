"""The fine-tuning task API, compatible with Embedding Studio's `/api/v1/fine-tuning/task`.

    POST /api/v1/fine-tuning/task                 create (same idempotency_key -> same task)
    GET  /api/v1/fine-tuning/task/{id}            one task
    GET  /api/v1/fine-tuning/task?status=&limit=&offset=   newest first
    PUT  /api/v1/fine-tuning/task/{id}/cancel     (POST too) cancel a pending or running task

Creating and cancelling need the `write` scope, reading `read` (serving/api/auth.py).

Tasks are stored in OpenSearch (`serving.state.tasks`) and run by the tuner worker (`clicktune tuner
run`). A task created without `batch_id` is stored with `batch_id: null`: releasing the current
batch is the tuner's work, so the worker releases it when it takes the task and records its id.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from serving.api.api_errors import ApiError
from serving.api.auth import Scope, requires
from serving.state.tasks import (
    OpenSearchTaskStore,
    TaskConflictError,
    TaskError,
    TaskNotFoundError,
    TaskStatus,
    TaskTransitionError,
    cancel_task,
    new_task,
)

__all__ = ["CreateTaskRequest", "task_router"]

PREFIX = "/api/v1/fine-tuning/task"
BATCH_ID = r"^batch-[0-9]{4,9}$"  # what tuner.batches.batch_name names a released batch
TASK_ID = r"^[A-Za-z0-9_-]{1,64}$"  # a uuid's hex, or "k" + 31 hex digits (idempotency key)
TaskId = Annotated[str, Path(pattern=TASK_ID, description="a task id as created")]
READ = [requires(Scope.READ)]
WRITE = [requires(Scope.WRITE)]


class CreateTaskRequest(BaseModel):
    """`POST /api/v1/fine-tuning/task`: Embedding Studio's fields."""

    model_config = ConfigDict(extra="forbid")

    fine_tuning_method: str = Field(min_length=1, max_length=200)
    batch_id: str | None = Field(
        default=None,
        pattern=BATCH_ID,
        description="a released batch (batch-NNNN); absent: the worker releases the current one",
    )
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


def task_router(store: OpenSearchTaskStore, max_limit: int = 100) -> APIRouter:
    """The task routes over `store`."""
    router = APIRouter(prefix=PREFIX, tags=["fine-tuning tasks"])

    @router.post("", status_code=201, dependencies=WRITE)
    def create(body: CreateTaskRequest, response: Response) -> dict[str, Any]:
        task = new_task(body.fine_tuning_method, body.batch_id, body.metadata, body.idempotency_key)
        try:
            stored, created = store.create(task)
        except TaskError as exc:
            raise _unavailable(exc) from exc
        if not created:
            response.status_code = 200  # the task this idempotency key already made
        return stored.as_dict()

    @router.get("/{task_id}", dependencies=READ)
    def get(task_id: TaskId) -> dict[str, Any]:
        return _call(store.get, task_id).as_dict()

    @router.get("", dependencies=READ)
    def list_(
        status: TaskStatus | None = None,
        limit: int = Query(default=20, ge=1),
        offset: int = Query(default=0, ge=0),
    ) -> list[dict[str, Any]]:
        if limit > max_limit:
            raise ApiError(422, f"limit={limit} exceeds {max_limit}", "invalid_request_error")
        try:
            return [t.as_dict() for t in store.list(status, limit, offset)]
        except TaskError as exc:
            raise _unavailable(exc) from exc

    @router.put("/{task_id}/cancel", dependencies=WRITE)
    @router.post("/{task_id}/cancel", dependencies=WRITE)
    def cancel(task_id: TaskId) -> dict[str, Any]:
        return _call(cancel_task, store, task_id).as_dict()

    return router


def _call(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except TaskNotFoundError as exc:
        raise ApiError(404, str(exc), "not_found") from exc
    except (TaskTransitionError, TaskConflictError) as exc:
        raise ApiError(409, str(exc), "conflict") from exc
    except TaskError as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"task store unavailable: {exc}", "service_unavailable")
