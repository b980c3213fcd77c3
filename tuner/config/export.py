"""ONNX export settings: opset, the parity check and the int8 variant's bounds."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

__all__ = ["ExportSettings", "Int8Method"]


class Int8Method(StrEnum):
    """How `model.int8.onnx` is made (tuner/int8_variant.py)."""

    dynamic = "dynamic"  # onnxruntime dynamic quantisation, projections chosen by damage
    static = "static"  # NNCF post-training static quantisation, checked on OpenVINO


class ExportSettings(BaseModel):
    """ONNX export of a trained model."""

    opset_version: int = Field(default=17, ge=14)
    parity_min_cosine: float = Field(default=0.9999, gt=0.0, le=1.0)
    parity_texts: int = Field(default=32, ge=1, description="held-out texts for the check")
    int8: bool = Field(
        default=True,
        description="also write model.int8.onnx for text models (serving.encoder.variant: int8), "
        "kept only within the two bounds below",
    )
    int8_method: Int8Method = Field(
        default=Int8Method.dynamic,
        description="dynamic (onnxruntime) | static (NNCF, calibrated on the validation "
        "sessions' queries and shown documents, checked on OpenVINO: tuner/static_int8.py)",
    )
    int8_min_cosine: float = Field(
        default=0.99, gt=0.0, le=1.0, description="held-out min cosine of int8 to fp32 vectors"
    )
    int8_max_recall_drop: float = Field(
        default=0.01,
        ge=-1.0,
        le=1.0,
        description="largest Recall@10 fp32 - int8 on the validation sessions that keeps int8",
    )
