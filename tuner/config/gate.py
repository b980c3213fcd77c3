"""Gate settings: when a trained candidate may be registered, and how clicks are read."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Examination", "GateSettings"]


class Examination(StrEnum):
    """How users examine a result list, as the gate's off-policy estimate reads clicks."""

    position = "position"  # by rank alone (PBM): tuner/offpolicy.py
    cascade = "cascade"  # by rank and clicks above: users may stop after a click (examination.py)


class GateSettings(BaseModel):
    """When a trained candidate may be registered."""

    enabled: bool = True
    primary_metric: str = Field(
        default="dr_dcg@10",
        pattern="^(dr_dcg@10|ips_dcg@10|ndcg@10|mrr@10|recall@10|recall@100)$",
        description="dr_dcg@10: the off-policy estimate of each validation query's DCG@10 from "
        "the live model's own log, crediting documents below the page that shuffled searches "
        "showed (tuner/offline_estimate.py); ips_dcg@10: re-ranking each session's shown hits "
        "only (tuner/session_eval.py); the others are computed on click labels, which favour "
        "the live model",
    )
    min_improvement: float = Field(
        default=0.0, description="candidate must beat live on the primary metric by more than this"
    )
    confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1.0,
        description="ips_dcg@10: one-sided confidence that the candidate is better; the lower "
        "bound of the mean over confirm queries of the per-query paired differences (mean - "
        "t * SE, tuner/gate.py) must beat min_improvement; stated in every decision",
    )
    promote_confidence: float = Field(
        default=0.99,
        ge=0.5,
        lt=1.0,
        description="with an online stage (worker rollout two_stage): a candidate whose lower "
        "bound at this confidence beats min_improvement goes live without the online test",
    )
    promote_directly: bool = Field(
        default=True, description="False: every candidate goes through the online test"
    )
    noninferiority_margin: float = Field(
        default=0.10,
        ge=0.0,
        lt=1.0,
        description="with an online stage: a candidate whose lower bound at `confidence` is "
        "above -margin x live's value is registered and tested online; below, rejected. 0.10 "
        "is the measured choice (bench/decide.py, products-synth, 10 seeds): false rejects under "
        "cascade users 4/20 at 0.10 against 10/20 at 0.02, no false promote at either (the "
        "online test decides); the price is online searches for equal and slightly worse "
        "candidates",
    )
    select_fraction: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="with several hyperparameter sets: the share of validation queries (stable "
        "hash) the search picks its winner on; the gate bounds it on the others (confirm)",
    )
    min_confirm_queries: int = Field(
        default=10,
        ge=2,
        description="fewer confirm queries than this: the decision is 'undecided' and the live "
        "model stays (a bound over a handful of queries is not worth trusting)",
    )
    examination: Examination = Field(
        default=Examination.position,
        description="dr_dcg@10's examination model: position (by rank alone) or cascade (by "
        "rank and clicks above, with the stop probability after a click estimated from the "
        "log; ~0 under position-based users, so nothing changes there)",
    )
    max_general_regression: float = Field(default=0.01, ge=0.0)
    rank_against: Literal["shown", "pool"] = Field(
        default="shown",
        description="validation ranks each query's shown hits, or the pool of all shown hits "
        "(sees a candidate that pulls in other queries' documents; favours the live model)",
    )
    general_dataset: Path | None = Field(
        default=None, description="judged collection dir for the general (forgetting) check"
    )
    general_split: str = "test"
    general_max_queries: int = Field(default=200, ge=1)
    general_decides: bool = Field(
        default=True,
        description="False: live and candidate are scored on the general set and the figures "
        "recorded, but the set does not decide (the demo scores every candidate on its test "
        "queries this way, rejected ones too, without letting the test judgments steer the gate)",
    )
