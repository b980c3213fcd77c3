"""Request bodies of the HTTP API, validated at the edge (pydantic)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EmbedRequest", "EmbeddingsRequest", "SearchRequest"]


class EmbeddingsRequest(BaseModel):
    """OpenAI's `POST /v1/embeddings` body. Token-id inputs are not supported (send text)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str | None = Field(default=None, description="accepted; the live model answers")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbedRequest(BaseModel):
    """ml-commons' default remote-connector body: `{"input": [...]}`."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str]

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class SearchRequest(BaseModel):
    """`POST /v1/search`: a query, how many hits, and who asks (for the UBI record)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    k: int | None = Field(default=None, ge=1, description="hits wanted; default 10 (<= max_k)")
    client_id: str | None = None
    session_id: str | None = None
    mode: Literal["knn", "hybrid"] = Field(
        default="knn", description="knn, or hybrid = BM25 + k-NN (normalised, weighted)"
    )
