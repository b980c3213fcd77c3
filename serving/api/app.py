"""The HTTP API: OpenAI-compatible embeddings, ml-commons `/embed`, search with UBI logging.

`create_app` takes every collaborator as an argument (model slot, document index, query log,
settings); nothing connects or loads a model here. Handlers are plain `def`s, so FastAPI runs
the CPU-bound encoding in its thread pool and the event loop stays free.

`/v1/search` and A/B arms embed queries with the slot's encoder, the query side of a query
model; `/v1/embeddings` and `/embed` embed with the side `input_type` names, documents by default
(serving/encoders/encoder_pair.py, serving/api/api_models.py).

Every route declares the token scope it needs (serving/api/auth.py; the app refuses to start with
one that does not), and every body passes `BodyLimits` (serving/api/body_limits.py) first.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from serving.api.api_errors import ApiError
from serving.api.api_models import EmbeddingsRequest, EmbedRequest, SearchRequest
from serving.api.auth import Authenticator, Scope, requires, undeclared_routes
from serving.api.body_limits import BodyLimits, route_limits
from serving.api.metrics import install_metrics
from serving.api.query_ids import QueryIdSigner
from serving.config import ServingSettings
from serving.encoders.encoder import ServableEncoder
from serving.encoders.encoder_pair import document_encoder, encoder_for_input
from serving.encoders.slot import ModelSlot
from serving.errors import DocumentIndexError, QueryLogError, ServingError
from serving.index.hybrid import HybridSearch
from serving.index.vector_index import Hit, SearchIndex
from serving.rollout.ab import ArmRouter
from serving.rollout.randomize import ResultRandomizer
from serving.state.query_log import QueryLog

__all__ = ["ApiError", "create_app"]

APPLICATION = "clicktune"
ARM = "production"
RETRY_AFTER_S = "5"
DEFAULT_K = 10
READ = [requires(Scope.READ)]
PUBLIC = [requires(Scope.PUBLIC)]


def create_app(
    slot: ModelSlot,
    index: SearchIndex,
    query_log: QueryLog,
    settings: ServingSettings,
    collector: APIRouter | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    hybrid: HybridSearch | None = None,
    arms: ArmRouter | None = None,
    authenticator: Authenticator | None = None,
    signer: QueryIdSigner | None = None,
) -> FastAPI:
    """The FastAPI app of one serving replica, wired to the given collaborators.

    `authenticator` None: no token is configured, so every route that needs one answers 503
    (reads stay open). `signer`: /v1/search issues signed query ids (serving/api/query_ids.py).
    """
    app = FastAPI(title="clicktune", version="1")
    app.state.authenticator = authenticator or Authenticator()
    limits = _Limits(settings)
    randomize = ResultRandomizer(settings.randomization)

    @app.exception_handler(ApiError)
    def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    if collector is not None:  # the UBI collector (serving/api/collector.py)
        app.include_router(collector)
    for router in routers:  # admin (serving/api/admin.py), documents (serving/api/documents.py)
        app.include_router(router)
    app.add_middleware(
        BodyLimits,
        max_bytes=settings.max_body_bytes,
        max_depth=settings.max_json_depth,
        per_path=route_limits(app.routes),  # the collector's own, smaller, limit
    )
    metrics = install_metrics(app, slot, arms=arms.ledger if arms is not None else None)
    app.state.metrics = metrics  # GET /metrics; the composition root may add collectors
    if settings.cors_origins:  # browsers post events from the shop's own origin
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"]
        )

    @app.post("/v1/embeddings", response_model=dict[str, Any], dependencies=READ)
    def embeddings(body: EmbeddingsRequest) -> Response:
        encoder = encoder_for_input(_encoder(slot), body.side())
        texts = limits.check(body.texts())
        if body.dimensions is not None and body.dimensions != encoder.dimension:
            raise ApiError(
                422,
                f"dimensions={body.dimensions} is not supported: model "
                f"{encoder.version!r} has dimension {encoder.dimension}",
                "invalid_request_error",
            )
        vectors = encoder.encode(texts)
        tokens = encoder.count_tokens(texts)
        data = [
            {"object": "embedding", "index": i, "embedding": _format(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        return _json(
            {
                "object": "list",
                "data": data,
                "model": encoder.version,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    @app.post("/embed", response_model=list[list[float]], dependencies=READ)
    def embed(body: EmbedRequest) -> Response:
        encoder = encoder_for_input(_encoder(slot), body.side())
        return _json(encoder.encode(limits.check(body.texts())))

    @app.post("/v1/search", dependencies=READ)
    def search(body: SearchRequest) -> dict[str, Any]:
        encoder = _encoder(slot)
        limits.check([body.query])
        k = body.k if body.k is not None else min(DEFAULT_K, settings.max_k)
        if k > settings.max_k:
            raise ApiError(422, f"k={k} exceeds max_k={settings.max_k}", "invalid_request_error")
        experiment = arms.experiment() if arms is not None else None
        if (
            experiment is not None and body.mode == "knn"
        ):  # A/B: the caller's arm (serving/rollout/ab.py)
            return _routed(arms, experiment, body, k, encoder)  # type: ignore[arg-type]
        fetch = randomize.draw(
            k
        )  # shuffled searches fetch `depth` hits (serving/rollout/randomize.py)
        vector = encoder.encode([body.query])[0]
        if body.mode == "hybrid" and hybrid is None:
            raise ApiError(
                422, "mode='hybrid' is not enabled on this server", "invalid_request_error"
            )
        try:
            if body.mode == "hybrid":
                hits = hybrid.search(body.query, vector, fetch or k)  # type: ignore[union-attr]
            else:
                hits = index.search_knn(vector, fetch or k)
            served_from = hits[0].index if hits else (index.live_index() or settings.index.alias)
        except DocumentIndexError as exc:
            raise _unavailable(f"document index unavailable: {exc}") from exc
        hits, randomized = randomize.shuffle(hits, k) if fetch else (hits, None)
        record = _query_record(body, hits, encoder.version, served_from, signer)
        if randomized:
            record["query_attributes"]["randomized"] = randomized
        return _logged_answer(record, encoder.version, ARM, hits)

    def _routed(
        router: ArmRouter, experiment: Any, body: SearchRequest, k: int, encoder: Any
    ) -> dict[str, Any]:
        fetch = randomize.draw(k)
        try:
            routed = router.search(experiment, body.client_id, body.query, k, encoder, fetch=fetch)
        except DocumentIndexError as exc:
            raise _unavailable(f"document index unavailable: {exc}") from exc
        hits, randomized = list(routed.hits), None
        if fetch and routed.arm != "interleave":  # an interleaved list's order is the experiment
            hits, randomized = randomize.shuffle(hits, k)
        record = _query_record(body, hits, routed.model_version, routed.index, signer)
        record["query_attributes"].update(routed.attributes)
        if randomized:
            record["query_attributes"]["randomized"] = randomized
        return _logged_answer(record, routed.model_version, routed.arm, hits)

    def _logged_answer(
        record: dict[str, Any], model_version: str, arm: str, hits: list[Any]
    ) -> dict[str, Any]:
        """Publish the UBI query record, then answer; no logged query, no answer."""
        try:
            query_log.publish(record)
        except QueryLogError as exc:
            raise _unavailable(f"query not logged, search refused: {exc}") from exc
        return {
            "query_id": record["query_id"],
            "model_version": model_version,
            "arm": arm,
            "hits": [_hit(h) for h in hits],
        }

    @app.get("/v1/models", dependencies=READ)
    def models() -> dict[str, Any]:
        encoder = _encoder(slot)
        documents = document_encoder(encoder)
        return {
            "object": "list",
            "data": [
                {
                    "id": encoder.version,
                    "object": "model",
                    "owned_by": APPLICATION,
                    "dimension": encoder.dimension,
                    # the model that embeds documents (input_type 'document'); the id embeds
                    # queries, and both are one model unless a query model serves
                    "document_model": documents.version,
                }
            ],
        }

    @app.get("/healthz", dependencies=PUBLIC)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", dependencies=PUBLIC)
    def readyz() -> JSONResponse:
        encoder = slot.current
        try:
            live = index.live_index()
        except DocumentIndexError as exc:
            return JSONResponse({"status": "not ready", "reason": str(exc)}, status_code=503)
        if encoder is None or live is None:
            reason = (
                "no model loaded"
                if encoder is None
                else (f"alias {settings.index.alias!r} does not exist; run `clicktune index`")
            )
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": encoder.version, "index": live})

    undeclared = undeclared_routes(app.routes)
    if undeclared:
        raise ServingError(
            f"routes {undeclared} declare no token scope: add "
            "dependencies=[requires(Scope.<PUBLIC|READ|WRITE|ADMIN>)] (serving/api/auth.py)"
        )
    return app


class _Limits:
    def __init__(self, settings: ServingSettings) -> None:
        self.max_inputs = settings.max_batch_inputs
        self.max_chars = settings.max_text_chars

    def check(self, texts: list[str]) -> list[str]:
        if not texts:
            raise ApiError(422, "input is empty: send at least one text", "invalid_request_error")
        if len(texts) > self.max_inputs:
            raise ApiError(
                413,
                f"input has {len(texts)} texts; the limit is max_batch_inputs={self.max_inputs}",
                "request_too_large",
            )
        for i, text in enumerate(texts):
            if len(text) > self.max_chars:
                raise ApiError(
                    413,
                    f"input[{i}] has {len(text)} characters; the limit is "
                    f"max_text_chars={self.max_chars}",
                    "request_too_large",
                )
        return texts


def _encoder(slot: ModelSlot) -> ServableEncoder:
    encoder = slot.current
    if encoder is None:
        raise _unavailable("no model loaded yet")
    return encoder


def _unavailable(message: str) -> ApiError:
    return ApiError(503, message, "service_unavailable", {"Retry-After": RETRY_AFTER_S})


def _format(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    if encoding_format == "base64":  # OpenAI's format: little-endian float32 bytes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector


def _json(content: Any) -> Response:
    """A JSON answer serialised by orjson, numpy arrays included (~50x FastAPI's encoder for
    a batch of vectors, which dominated bulk request time)."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, media_type="application/json")


def _hit(hit: Hit) -> dict[str, Any]:
    return {**hit.source, "id": hit.id, "score": hit.score}


def _query_record(
    body: SearchRequest, hits: list[Hit], version: str, index: str, signer: QueryIdSigner | None
) -> dict:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "query_id": signer.issue() if signer is not None else str(uuid.uuid4()),
        "timestamp": now,
        "client_id": body.client_id,
        "user_query": body.query,
        "query_response_hit_ids": [h.id for h in hits],
        "application": APPLICATION,
        "query_attributes": {
            "model_version": version,
            "arm": ARM,
            "index": index,
            "session_id": body.session_id,
        },
    }
