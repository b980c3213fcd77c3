"""`POST /v1/documents` and `DELETE /v1/documents/{id}`: writes to every index that needs them.

A write reaches the live index and, while they exist, the index a reindex is building
(`docs_next`) and an A/B candidate's index (`docs_candidate`) — see `serving.index.index_versions`.
Each index is embedded with its own model (the version in its name): the document side of the
slot's encoder (a query model's document model, serving/encoders/encoder_pair.py) when it is that
version, else `encoder_for(version)` (loaded from the registry, cached by the caller).
The text embedded is `document_text(doc, index.text_fields)` (title + text by default), as for
`clicktune index`. With a CLIP model, a document whose `index.image_field` is set (a base64
data: URI or a URL on `index.images.allowed_hosts`; never a local path) is embedded from that
image by the image tower instead (see `serving.index.doc_images`); an image field of another form
(under any model) or an image that cannot be used answers 422 with a generic reason. A
document without `_id` gets a random one; the answer lists the ids. Both routes need the
`write` scope (serving/api/auth.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from opensearchpy.exceptions import OpenSearchException
from pydantic import BaseModel, ConfigDict, Field

from serving.api.api_errors import ApiError
from serving.api.auth import Scope, requires
from serving.config import ServingSettings
from serving.encoders.encoder import Encoder
from serving.encoders.encoder_pair import document_encoder
from serving.encoders.slot import ModelSlot
from serving.errors import BulkIndexError, CorpusError, DocumentIndexError
from serving.index.corpus import document_text
from serving.index.doc_images import check_image_sources, embed_documents
from serving.index.index_versions import index_version, write_targets
from serving.index.vector_index import DocumentIndex

__all__ = ["DocumentsRequest", "EncoderFor", "documents_router", "index_dimension"]

EncoderFor = Callable[[str], Encoder]


class DocumentsRequest(BaseModel):
    """Documents to add: `{"documents": [{"_id"?, "title", "text", ...}], "refresh": false}`."""

    model_config = ConfigDict(extra="forbid")

    documents: list[dict[str, Any]] = Field(min_length=1)
    refresh: bool = Field(default=False, description="make them searchable before answering")


def index_dimension(doc_index: DocumentIndex, index: str | None = None) -> int | None:
    """The vector dimension of `index` (default: the live one), None when there is none."""
    target = index or doc_index.live_index()
    if target is None:
        return None
    try:
        mapping = doc_index.client.indices.get_mapping(index=target)
    except OpenSearchException as exc:
        raise DocumentIndexError(f"cannot read the mapping of {target!r}: {exc}") from exc
    for body in mapping.values():
        field = body["mappings"].get("properties", {}).get(doc_index.settings.vector_field, {})
        if "dimension" in field:
            return int(field["dimension"])
    return None


def documents_router(
    slot: ModelSlot,
    doc_index: DocumentIndex,
    settings: ServingSettings,
    encoder_for: EncoderFor | None = None,
) -> APIRouter:
    """The `/v1/documents` routes, bound to the slot and the document index."""
    router = APIRouter(dependencies=[requires(Scope.WRITE)])

    @router.post("/v1/documents")
    def add_documents(body: DocumentsRequest) -> dict[str, Any]:
        current = slot.current
        if current is None:
            raise ApiError(503, "no model loaded yet", "service_unavailable")
        encoder = document_encoder(current)
        docs = _with_ids(body.documents, settings)
        texts = [document_text(doc, settings.index.text_fields) for doc in docs]
        _check_lengths(texts, settings.max_text_chars)
        try:
            check_image_sources(docs, settings.index)
            live, targets = _targets(doc_index)
            vectors: dict[str, Any] = {}  # model version -> vectors, each model runs once
            written = 0
            for target in targets:
                model = _encoder_of(doc_index, target, encoder, encoder_for)
                if model.version not in vectors:
                    vectors[model.version] = embed_documents(model, docs, settings.index)
                count = doc_index.bulk_index(target, docs, vectors[model.version])
                written = count if target == live else written
                if body.refresh:
                    doc_index.refresh(target)
        except (BulkIndexError, CorpusError) as exc:  # refused documents, unreadable images
            raise ApiError(422, str(exc), "invalid_request_error") from exc
        except DocumentIndexError as exc:
            raise _unavailable(exc) from exc
        return {
            "index": live,
            "indexes": targets,
            "model_version": encoder.version,
            "indexed": written,
            "ids": [doc["_id"] for doc in docs],
        }

    @router.delete("/v1/documents/{doc_id}")
    def delete_document(doc_id: str, refresh: bool = False) -> dict[str, Any]:
        try:
            live, targets = _targets(doc_index)
            deleted = [t for t in targets if _delete(doc_index, t, doc_id, refresh)]
        except DocumentIndexError as exc:
            raise _unavailable(exc) from exc
        if live not in deleted:
            raise ApiError(404, f"document {doc_id!r} is not in index {live!r}", "not_found")
        return {"id": doc_id, "deleted_from": deleted}

    return router


def _targets(doc_index: DocumentIndex) -> tuple[str, list[str]]:
    targets = write_targets(doc_index)
    live = doc_index.live_index()
    if live is None:
        raise ApiError(
            409,
            f"alias {doc_index.alias!r} does not exist; run `clicktune index` first",
            "conflict",
        )
    return live, targets


def _encoder_of(
    doc_index: DocumentIndex, index: str, serving: Encoder, encoder_for: EncoderFor | None
) -> Encoder:
    """The model that embeds documents for `index`: its own version's, else the served one."""
    version = index_version(doc_index, index)
    if encoder_for is not None and version is not None and version != serving.version:
        try:
            return encoder_for(version)
        except Exception as exc:  # a missing or broken model: refuse rather than write garbage
            raise ApiError(
                503,
                f"cannot load model {version!r} for index {index!r}: {exc}",
                "service_unavailable",
            ) from exc
    dimension = index_dimension(doc_index, index)
    if dimension is not None and dimension != serving.dimension:
        raise ApiError(
            409,
            f"index {index!r} holds {dimension}-dimensional vectors but model "
            f"{serving.version!r} makes {serving.dimension}; reindex first",
            "conflict",
        )
    return serving


def _delete(doc_index: DocumentIndex, index: str, doc_id: str, refresh: bool) -> bool:
    params = {"refresh": "true"} if refresh else {}
    try:
        answer = doc_index.client.delete(index=index, id=doc_id, params=params, ignore=404)
    except OpenSearchException as exc:
        raise DocumentIndexError(f"cannot delete {doc_id!r} from {index!r}: {exc}") from exc
    return answer.get("result") == "deleted"


def _unavailable(exc: Exception) -> ApiError:
    return ApiError(503, f"document index unavailable: {exc}", "service_unavailable")


def _with_ids(documents: list[dict[str, Any]], settings: ServingSettings) -> list[dict[str, Any]]:
    if len(documents) > settings.max_batch_inputs:
        raise ApiError(
            413,
            f"{len(documents)} documents; the limit is "
            f"max_batch_inputs={settings.max_batch_inputs}",
            "request_too_large",
        )
    docs = []
    for i, doc in enumerate(documents):
        doc_id = doc.get("_id", str(uuid.uuid4()))
        if not isinstance(doc_id, str) or not doc_id:
            raise ApiError(
                422, f"documents[{i}]._id must be a non-empty string", "invalid_request_error"
            )
        docs.append({**doc, "_id": doc_id})
    return docs


def _check_lengths(texts: list[str], max_chars: int) -> None:
    for i, text in enumerate(texts):
        if len(text) > max_chars:
            raise ApiError(
                413,
                f"documents[{i}] has {len(text)} characters of text; the limit is "
                f"max_text_chars={max_chars}",
                "request_too_large",
            )
