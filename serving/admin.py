"""The admin API: registry models, promote and rollback, for the `admin` scope.

Every route needs the admin token (CLICKTUNE_ADMIN__TOKEN; serving/auth.py answers 503 when
none is configured, 401 without it or with a wrong one, 403 for a lesser token). Promote and
rollback check and swap the model on
this replica first, then move the alias in the registry, then tell the other replicas on the
control topic (they also find the alias move by polling the registry).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from serving.api_errors import ApiError
from serving.auth import Scope, requires
from serving.errors import RegistryError, ServingError, SwapRefusedError
from serving.hotswap import HotSwapper, SwapResult
from serving.registry import ModelVersion
from serving.replicas import ControlPublisher, model_changed

__all__ = ["PromoteRequest", "admin_router"]

log = logging.getLogger(__name__)


class PromoteRequest(BaseModel):
    """`POST /admin/models/promote`: the version to serve; `reindex` accepts a new dimension."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    reindex: bool = False


def admin_router(
    swapper: HotSwapper,
    alias: str = "production",
    publisher: ControlPublisher | None = None,
) -> APIRouter:
    """The `/admin/models*` routes, all of scope `admin`."""
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
        try:
            result = swapper.promote(body.version, alias, reindex=body.reindex)
        except SwapRefusedError as exc:
            raise ApiError(409, str(exc), "model_refused") from exc
        except RegistryError as exc:
            raise ApiError(404, str(exc), "not_found") from exc
        return _answer(result, alias, publisher, body.reindex)

    @router.post("/models/rollback")
    def rollback() -> dict[str, Any]:
        try:
            result = swapper.rollback(alias)
        except SwapRefusedError as exc:
            raise ApiError(409, str(exc), "model_refused") from exc
        except RegistryError as exc:
            raise ApiError(409, str(exc), "conflict") from exc
        return _answer(result, alias, publisher, reindex=False)

    return router


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
        "parent": version.parent,
        "created_at": version.created_at,
        "aliases": list(version.aliases),
        "metrics": version.metrics,
    }
