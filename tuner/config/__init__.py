"""Settings of the tuner: base model, outcome weights, position bias, training knobs.

One module per concern; `TunerSettings` below composes them, and every name is importable
from `tuner.config` itself.

distributed  data-parallel training: processes, nodes, backend
train        one fine-tuning run: method, negatives, pooling, hyperparameters and their overrides
export       ONNX export, parity check and the int8 variant
batches      how sessions become batches: grace, validation and cold-query splits, replay
gate         when a candidate may be registered: metric, confidence, examination model
worker       the tuner worker: trigger, lease, retries, candidates, rollout
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from tuner.config.batches import BatchSettings
from tuner.config.distributed import DistributedBackend, DistributedSettings
from tuner.config.export import ExportSettings, Int8Method
from tuner.config.gate import Examination, GateSettings
from tuner.config.train import (
    NegativeSource,
    PoolingSettings,
    TrainMethod,
    TrainOverrides,
    TrainSettings,
)
from tuner.config.worker import Candidates, RolloutMode, WorkerSettings

__all__ = [
    "BatchSettings",
    "Candidates",
    "DistributedBackend",
    "DistributedSettings",
    "Examination",
    "ExportSettings",
    "GateSettings",
    "Int8Method",
    "NegativeSource",
    "PoolingSettings",
    "PropensityKind",
    "RolloutMode",
    "TrainMethod",
    "TrainOverrides",
    "TrainSettings",
    "TunerSettings",
    "WorkerSettings",
]


class PropensityKind(StrEnum):
    """Where the examination propensities p(k) come from."""

    # estimated from the sessions: from the randomised ones when there are enough (see
    # serving.randomization), else a position-based click model fitted by EM
    em = "em"
    power_law = "power_law"  # p(k) = (1/(k+1))^eta with the configured eta


class TunerSettings(BaseModel):
    """What the tuner learns from and how."""

    outcome_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    )
    propensity: PropensityKind = PropensityKind.em
    propensity_max_rank: int = Field(default=10, ge=1, description="ranks the EM model fits")
    propensity_min_sessions: int = Field(
        default=200, ge=1, description="fewer sessions than this: fall back to the power law"
    )
    propensity_min_randomized: int = Field(
        default=100,
        ge=1,
        description="randomised sessions (serving.randomization) from which p(k) is fitted "
        "directly, before EM is tried",
    )
    propensity_min_varied: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="share of hits shown at several ranks below which EM falls back to the "
        "power law (EM cannot tell position from relevance on fixed rankings)",
    )
    propensity_monotone: bool = Field(
        default=True,
        description="project the EM fit onto curves that do not rise with rank (lists scanned "
        "top-down); off for layouts such as grids",
    )
    propensity_eta: float = Field(
        default=1.0, ge=0.0, description="power-law examination propensity p(k) = (1/(k+1))^eta"
    )
    max_inverse_propensity: float = Field(default=10.0, ge=1.0)
    max_clicks_per_session: int = Field(
        default=20, ge=1, description="sessions with more outcome events look like bots"
    )
    train: TrainSettings = Field(default_factory=TrainSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    search: list[TrainOverrides] = Field(
        default_factory=list, description="hyperparameter sets; empty = `train` alone"
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="an MLflow server; default sqlite:///<home>/mlflow/mlflow.db"
    )
    mlflow_experiment: str = "clicktune"
    mlflow_enabled: bool = True
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
