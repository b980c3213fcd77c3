"""`InputType`: what a text sent to clicktune is, a search query or a document for the index.

The field `/v1/embeddings` and `/embed` take (`input_type`, as Voyage's and Cohere's embedding
APIs name it; OpenAI's has none) and the side `clicktune opensearch connect --input-type`
registers in ml-commons. Its own module so the CLI can offer the choices without loading
onnxruntime.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["InputType"]


class InputType(StrEnum):
    """What a text is: a search query, or a document to store in the index."""

    QUERY = "query"
    DOCUMENT = "document"
