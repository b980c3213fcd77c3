"""Batch settings: how sessions are frozen into batches, held out and replayed."""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["BatchSettings"]


class BatchSettings(BaseModel):
    """How sessions are frozen into batches and split for validation."""

    grace_s: float = Field(
        default=300.0, ge=0, description="a window closes this long ago, so late events land"
    )
    validation_fraction: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="the latest sessions that validate (by time)"
    )
    cold_query_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="queries held out entirely (cold start)"
    )
    min_queries_for_cold_split: int = Field(default=20, ge=1)
    rotate_cold_queries: bool = Field(
        default=True,
        description="draw the held-out queries afresh per batch (hash of batch id and query, "
        "recorded under batches/holdout/) so every query is trained on in most batches; "
        "False: the same queries are held out in every batch (a fixed cold-start set)",
    )
    replay_ratio: float = Field(
        default=0.5, ge=0.0, description="earlier batches' sessions replayed, per new session"
    )
    history_batches: int = Field(
        default=10, ge=0, description="newest earlier batches that replay and validation read"
    )
    max_validation_sessions: int = Field(
        default=5000,
        ge=1,
        description="validation: this batch's held-out sessions, then earlier ones, newest first",
    )
    seed: int = 0
