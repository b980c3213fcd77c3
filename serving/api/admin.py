"""The admin API: registry models, promote and rollback, for the `admin` scope.

Every route needs the admin token (CLICKTUNE_ADMIN__TOKEN; serving/api/auth.py answers 503 when
none is configured, 401 without it or with a wrong one, 403 for a lesser token).

With a `Rollout` (what `clicktune serve` gives it) promote and rollback move the model, the
registry alias and the document alias together, so queries never run one model against another
model's vectors: the version is checked first (loaded, probes), then the rollout moves the
document alias onto an index built by that version and the registry alias onto the version
(serving/rollout/rollout.py, as `clicktune models promote` does), then this replica swaps its slot
and the rollout tells the others on the control topic. A version with no current kept index is
refused with 409 and nothing moved, unless the request says `"reindex": true`: then the rollout
re-embeds the live documents with it first (the request lasts as long as the reindex). While no
document alias exists there are no vectors to keep in step: the model and the registry alias
move alone, as they do without a `Rollout`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from serving.api.api_errors import ApiError
from serving.api.auth import Scope, requires
from serving.errors import (
    DocumentIndexError,
    ReindexPendingError,
    ReindexRequiredError,
    ServingError,
    SwapRefusedError,
)
from serving.models.registry import ModelVersion
from serving.rollout.hotswap import HotSwapper, SwapResult
from serving.rollout.replicas import ControlPublisher, model_changed
from serving.rollout.rollout import Rollout, RolloutResult

__all__ = ["PromoteRequest", "admin_router"]

log = logging.getLogger(__name__)


class PromoteRequest(BaseModel):
    """`POST /admin/models/promote`: the version to serve; `reindex` allows re-embedding the
    live documents with it when no index built by it is kept."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    reindex: bool = False


def admin_router(
    swapper: HotSwapper,
    alias: str = "production",
    publisher: ControlPublisher | None = None,
    rollout: Rollout | None = None,
) -> APIRouter:
    """The `/admin/models*` routes, all of scope `admin`; `rollout` (on the same registry and
    alias) keeps the document alias in step with the model."""
    router = APIRouter(prefix="/admin", dependencies=[requires(Scope.ADMIN)])

    @router.get("/models")
    def models() -> dict[str, Any]:
        registry = swapper.registry
        encoder = swapper.slot.current
        return {
            "versions": [_version(v) for v in registry.list()],
            "aliases": registry.aliases(),
            "history": {alias: registry.alias_history(alias)},
            "serving": {
                "slot": swapper.slot.name,
                "version": encoder.version if encoder else None,
                "dimension": encoder.dimension if encoder else None,
                "last_refusal": swapper.last_refusal,
            },
        }

    @router.post("/models/promote")
    def promote(body: PromoteRequest) -> dict[str, Any]:
        with _mapped():
            if rollout is not None and _has_documents(rollout):
                swap, moved = swapper.swap_after(
                    body.version,
                    lambda v: rollout.promote(v, allow_reindex=body.reindex),
                    reindex=True,  # the document alias moves onto the version's own index
                )
                return _rolled(swap, moved)
            result = swapper.promote(body.version, alias, reindex=body.reindex)
        return _answer(result, alias, publisher, body.reindex)

    @router.post("/models/rollback")
    def rollback() -> dict[str, Any]:
        with _mapped():
            if rollout is not None and _has_documents(rollout):
                target = rollout.rollback_target()
                swap, moved = swapper.swap_after(
                    target, lambda v: rollout.rollback(expected=v), reindex=True
                )
                return _rolled(swap, moved)
            result = swapper.rollback(alias)
        return _answer(result, alias, publisher, reindex=False)

    return router


@contextmanager
def _mapped() -> Iterator[None]:
    """Serving errors of a promote or rollback as API errors. Nothing moved when one is raised:
    the swapper and the rollout check before they move."""
    try:
        yield
    except SwapRefusedError as exc:
        raise ApiError(409, str(exc), "model_refused") from exc
    except ReindexRequiredError as exc:
        raise ApiError(409, str(exc), "reindex_required") from exc
    except ReindexPendingError as exc:  # an interrupted reindex to resume or abandon first
        raise ApiError(409, str(exc), "conflict") from exc
    except DocumentIndexError as exc:
        raise ApiError(503, str(exc), "service_unavailable") from exc
    except ServingError as exc:  # no previous version, no kept index, the registry lock
        raise ApiError(409, str(exc), "conflict") from exc


def _has_documents(rollout: Rollout) -> bool:
    """Whether the document alias exists: only then are there vectors to keep in step."""
    return rollout.doc_index.live_index() is not None


def _rolled(swap: SwapResult, moved: RolloutResult) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "alias": moved.alias,
        **swap.as_dict(),
        "index": moved.index,
        "previous_index": moved.previous_index,
        "reindexed": moved.reindexed,
        "published": moved.published,
    }
    if moved.warning:
        answer["warning"] = moved.warning
    return answer


def _answer(
    result: SwapResult, alias: str, publisher: ControlPublisher | None, reindex: bool
) -> dict[str, Any]:
    answer: dict[str, Any] = {"alias": alias, **result.as_dict(), "published": False}
    if publisher is not None:
        try:
            publisher.publish(model_changed(alias, result.version, reindex))
            answer["published"] = True
        except ServingError as exc:  # replicas still find the alias move by polling
            log.warning("%s", exc)
            answer["warning"] = str(exc)
    return answer


def _version(version: ModelVersion) -> dict[str, Any]:
    return {
        "version": version.version,
        "dimension": version.dimension,
        "kind": version.kind,
        "document_model": version.document_model,
        "parent": version.parent,
        "created_at": version.created_at,
        "aliases": list(version.aliases),
        "metrics": version.metrics,
    }
