"""Worker settings: trigger, task lease, retries, candidates and rollout."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = ["Candidates", "RolloutMode", "WorkerSettings"]


class RolloutMode(StrEnum):
    """What a worker task does with a registered candidate."""

    promote = "promote"  # straight to production once its index is built
    ab = "ab"  # an A/B arm first; the A/B policy promotes or rolls it back
    # offline first: strong evidence promotes, a non-inferior candidate becomes an interleaved
    # arm that the sequential test promotes or rolls back, anything else is rejected
    two_stage = "two_stage"


class Candidates(StrEnum):
    """Which candidates a worker iteration trains (tuner/candidate_policy.py picks one)."""

    full = "full"  # a full model by `train.method` (full or lora): deployed with a reindex
    query = "query"  # a query-side model (query_adapter, query_tower) over the live index
    both = "both"  # both; the cheaper (query) one unless the full one's gain pays its reindex


class WorkerSettings(BaseModel):
    """The tuner worker (`clicktune tuner run`): trigger, tasks, lease, rollout."""

    tasks_index: str = Field(
        default="clicktune-tasks", description="OpenSearch index of the fine-tuning tasks"
    )
    min_new_sessions: int = Field(
        default=200, ge=1, description="queue a task once this many sessions are unreleased"
    )
    min_interval_s: float = Field(
        default=3600.0, ge=0, description="and at least this long after the last batch"
    )
    trigger_enabled: bool = Field(default=True, description="False: tasks come from the API only")
    fine_tuning_method: str = Field(default="weighted-infonce", min_length=1)
    poll_s: float = Field(default=30.0, gt=0, description="trigger check and task poll period")
    lease_s: float = Field(
        default=60.0, gt=0, description="a worker silent this long loses the lease to a standby"
    )
    rollout: RolloutMode = RolloutMode.two_stage
    candidates: Candidates | None = Field(
        default=None,
        description="full, query or both; None: one candidate, the side `train.method` names "
        "(query_adapter, query_tower: query, else full)",
    )
    reindex_margin: float = Field(
        default=0.01,
        ge=0.0,
        description="candidates both: the full candidate deploys only when its gain over the "
        "live model (gate.primary_metric) beats the query-side one's by more than this, which "
        "pays for its reindex; otherwise the query-side one deploys without a reindex",
    )
    ab_traffic: float = Field(default=0.1, gt=0, lt=1, description="candidate arm's share")
    ab_mode: str = Field(
        default="split",
        pattern="^(split|interleave)$",
        description="rollout ab's arm; two_stage always interleaves",
    )
    ab_max_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="an undecided A/B test is rolled back after"
    )
    ab_max_queries: int | None = Field(
        default=20_000,
        ge=1,
        description="traffic budget: an experiment still undecided after this many of its "
        "searches is rolled back (None: only ab_max_s bounds it)",
    )
    max_resumes: int = Field(
        default=2, ge=0, description="times a stage is resumed after a worker died in it"
    )
    retry_initial_s: float = Field(
        default=1.0, gt=0, description="first wait before a stage retries a transient error"
    )
    retry_max_s: float = Field(
        default=60.0, gt=0, description="longest wait between tries (doubling from the first)"
    )
    stage_deadline_s: float = Field(
        default=1800.0,
        gt=0,
        description="a stage still meeting transient OpenSearch / Kafka errors this long after "
        "its first one fails the task",
    )
    progress_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="a long stage (training, scoring, export, reindex) logs a progress line "
        "at most this often, and at its start and end (0: every step)",
    )
