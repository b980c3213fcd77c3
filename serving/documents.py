"""`POST /v1/documents`: embed documents with the live model and write them to the live index.

The text embedded is `document_text(doc, index.text_fields)` (title + text by default), as for
`clicktune index`. A document without `_id` gets a random one; the answer lists the ids.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from opensearchpy.exceptions import OpenSearchException
from pydantic import BaseModel, ConfigDict, Field

from serving.app import ApiError
from serving.config import ServingSettings
from serving.corpus import document_text
from serving.errors import BulkIndexError, DocumentIndexError
from serving.slot import ModelSlot
from serving.vector_index import DocumentIndex

__all__ = ["DocumentsRequest", "documents_router", "index_dimension"]


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
    slot: ModelSlot, doc_index: DocumentIndex, settings: ServingSettings
) -> APIRouter:
    """The `/v1/documents` route, bound to the slot and the document index."""
    router = APIRouter()

    @router.post("/v1/documents")
    def add_documents(body: DocumentsRequest) -> dict[str, Any]:
        encoder = slot.current
        if encoder is None:
            raise ApiError(503, "no model loaded yet", "service_unavailable")
        docs = _with_ids(body.documents, settings)
        texts = [document_text(doc, settings.index.text_fields) for doc in docs]
        _check_lengths(texts, settings.max_text_chars)
        try:
            live = doc_index.live_index()
            if live is None:
                raise ApiError(
                    409,
                    f"alias {doc_index.alias!r} does not exist; run `clicktune index` first",
                    "conflict",
                )
            dimension = index_dimension(doc_index, live)
            if dimension is not None and dimension != encoder.dimension:
                raise ApiError(
                    409,
                    f"live index {live!r} holds {dimension}-dimensional vectors but model "
                    f"{encoder.version!r} makes {encoder.dimension}; reindex first",
                    "conflict",
                )
            written = doc_index.bulk_index(live, docs, encoder.encode(texts))
            if body.refresh:
                doc_index.refresh(live)
        except BulkIndexError as exc:
            raise ApiError(422, str(exc), "invalid_request_error") from exc
        except DocumentIndexError as exc:
            raise ApiError(
                503, f"document index unavailable: {exc}", "service_unavailable"
            ) from exc
        return {
            "index": live,
            "model_version": encoder.version,
            "indexed": written,
            "ids": [doc["_id"] for doc in docs],
        }

    return router


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
