"""Errors of the tuner, one tree so callers can catch the whole package at once.

TunerError
├── SessionStoreError      the UBI indexes cannot be read (missing index, bad records)
├── BatchStoreError        released batches cannot be read or recorded (OpenSearch unreachable)
│   └── BatchConflictError another process recorded a different batch under the same id
├── NoTrainingDataError    nothing to learn from: no sessions, no pairs, no document texts
├── ModelLoadError         a base model or registry version cannot be loaded
├── TrainConfigError       the training settings do not fit the model (layers, LoRA targets)
├── DistributedTrainingError  a data-parallel job (torchrun) failed or left no trained weights
└── ExportError            the ONNX export failed or the model cannot be exported
    └── ExportParityError  onnxruntime disagrees with torch; nothing is registered
"""

from __future__ import annotations

__all__ = [
    "BatchConflictError",
    "BatchStoreError",
    "DistributedTrainingError",
    "ExportError",
    "ExportParityError",
    "ModelLoadError",
    "NoTrainingDataError",
    "SessionStoreError",
    "TrainConfigError",
    "TunerError",
]


class TunerError(Exception):
    """Base of every error the tuner raises on purpose."""


class SessionStoreError(TunerError):
    """The UBI query or event index cannot be read."""


class BatchStoreError(TunerError):
    """Released batches cannot be read or recorded where `serving.state.backend` keeps them."""


class BatchConflictError(BatchStoreError):
    """Another process froze a different batch under this id first; list the batches again."""


class NoTrainingDataError(TunerError):
    """There is nothing to train on (no sessions, no pairs or no document texts)."""


class ModelLoadError(TunerError):
    """A model name, path or registry version cannot be loaded."""


class TrainConfigError(TunerError):
    """The training settings ask for something the model does not have."""


class DistributedTrainingError(TunerError):
    """A data-parallel fine-tune's processes failed; the model was not changed."""


class ExportError(TunerError):
    """The model cannot be exported to the serving format."""


class ExportParityError(ExportError):
    """The exported ONNX model does not reproduce the torch embeddings closely enough."""

    def __init__(self, min_cosine: float, threshold: float) -> None:
        self.min_cosine = min_cosine
        self.threshold = threshold
        super().__init__(
            f"ONNX parity check failed: minimum cosine to the torch embeddings is "
            f"{min_cosine:.6f}, must be >= {threshold}; the model was not registered"
        )
