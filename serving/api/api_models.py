"""Request bodies of the HTTP API, validated at the edge (pydantic)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.encoders.encoder_pair import InputType

__all__ = ["DEFAULT_INPUT_TYPE", "EmbedRequest", "EmbeddingsRequest", "SearchRequest"]

# Without `input_type` a text is embedded as a document: a caller that never heard of query
# models (an ingest pipeline set up before one was promoted) keeps writing the vectors the
# index holds; only a caller that says "query" gets the query model.
DEFAULT_INPUT_TYPE = InputType.DOCUMENT
INPUT_TYPE_HELP = (
    "'query' embeds search queries with the live query model; 'document' (the default) embeds "
    "texts to store with the document model whose vectors the index holds. The two differ only "
    "while a query model (kind 'query') serves; otherwise both give the same vectors."
)


class _TypedInput(BaseModel):
    """`input_type`, named as in Voyage's and Cohere's embedding APIs (OpenAI's has none)."""

    input_type: InputType | None = Field(default=None, description=INPUT_TYPE_HELP)

    @field_validator("input_type", mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if value is None or value in {t.value for t in InputType}:
            return value
        raise ValueError(
            f"input_type {value!r} is not known: use one of {[t.value for t in InputType]}"
        )

    def side(self) -> InputType:
        """The side to embed with: the one asked for, else documents."""
        return self.input_type or DEFAULT_INPUT_TYPE


class EmbeddingsRequest(_TypedInput):
    """OpenAI's `POST /v1/embeddings` body, plus `input_type`. Token-id inputs are not supported
    (send text)."""

    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str | None = Field(default=None, description="accepted; the live model answers")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbedRequest(_TypedInput):
    """ml-commons' default remote-connector body: `{"input": [...]}`, plus `input_type`."""

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
