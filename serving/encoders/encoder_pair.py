"""The query side and the document side of a served model: one encoder, or a query model's pair.

A symmetric model (text, CLIP) embeds queries and documents alike: both sides are the encoder
itself. A query model ("query model X over document model Y", `kind: "query"`, see
`serving.models.model_dir`) embeds queries with its own graph and documents with Y's, whose vectors
the index holds: `PairedEncoder` carries both. As an encoder it *is* its query side
(`encode`, `version`, `dimension`), so everything that searches (the slot, `/v1/search`, A/B and
interleaved arms, the micro-batcher and metrics wrappers around it) needs no change; everything
that embeds documents (`index`, `reindex`, `/v1/documents`, an ingest pipeline calling `/embed`)
goes through `document_encoder`, which finds the pair behind any wrapper (`.inner`) and returns
its document side, or the encoder itself when there is no pair. Serving's own wrappers go on
through `wrap_sides`: around a pair it wraps each side and keeps the pair outside, so document
encodes are micro-batched and metered (`side="document"`) as query encodes are.

`InputType` (serving/encoders/input_type.py) is the side a client of `/v1/embeddings` or `/embed`
asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from serving.encoders.encoder import DelegatingEncoder, ServableEncoder, wrapper_chain
from serving.encoders.input_type import InputType
from serving.errors import ModelLoadError

__all__ = [
    "InputType",
    "PairedEncoder",
    "document_encoder",
    "encoder_for_input",
    "paired",
    "wrap_sides",
]

SideWrapper = Callable[[ServableEncoder, InputType | None], ServableEncoder]


class PairedEncoder(DelegatingEncoder):
    """A query model over its document model: queries through `inner`, documents through
    `documents`. Both give vectors of one dimension, compared by cosine in the index."""

    def __init__(self, queries: ServableEncoder, documents: ServableEncoder) -> None:
        if queries.dimension != documents.dimension:
            raise ModelLoadError(
                f"query model {queries.version!r} makes {queries.dimension}-dimensional vectors "
                f"but its document model {documents.version!r} makes {documents.dimension}; "
                "a pair must share one dimension"
            )
        super().__init__(queries)
        self.documents = documents

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        return self.inner.encode(texts)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        return self.documents.encode(texts)


def paired(encoder: Any) -> PairedEncoder | None:
    """The `PairedEncoder` that `encoder` is or wraps (`.inner`, any depth), else None."""
    return next((e for e in wrapper_chain(encoder) if isinstance(e, PairedEncoder)), None)


def document_encoder(encoder: Any) -> Any:
    """The encoder that embeds documents for `encoder`: a pair's document side, else itself."""
    pair = paired(encoder)
    return pair.documents if pair is not None else encoder


def encoder_for_input(encoder: Any, input_type: InputType) -> Any:
    """`encoder` itself for queries (the slot's encoder is the query side), its document side
    for documents."""
    return encoder if input_type is InputType.QUERY else document_encoder(encoder)


def wrap_sides(encoder: ServableEncoder, wrap: SideWrapper) -> ServableEncoder:
    """`wrap(side, input_type)` around each side of a pair, the pair kept outermost so
    `document_encoder` finds the wrapped document side; around any other encoder, `wrap(encoder,
    None)`: one model embeds both."""
    if isinstance(encoder, PairedEncoder):
        queries = wrap(encoder.inner, InputType.QUERY)
        return PairedEncoder(queries, wrap(encoder.documents, InputType.DOCUMENT))
    return wrap(encoder, None)
