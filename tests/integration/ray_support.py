"""What the Ray reindex tests hand to actors: picklable factories that the actor processes
import from here (a local cluster's workers run in the checkout, so `tests` imports)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.encoder import DelegatingEncoder, OnnxTextEncoder
from tests.unit.serving.tiny_model import build_tiny_model

ONE_THREAD = EncoderSettings(runtime=EncoderRuntime.onnxruntime, intra_op_threads=1)


def tiny_onnx_model(path: Path, version: str) -> Path:
    """The tiny lookup ONNX model (tests/unit/serving/tiny_model.py) as model `version`."""
    build_tiny_model(path, dimension=8)
    meta = json.loads((path / "clicktune.json").read_text())
    (path / "clicktune.json").write_text(json.dumps({**meta, "version": version}))
    return path


def onnx_encoder(path: Path) -> OnnxTextEncoder:
    return OnnxTextEncoder.from_dir(path, ONE_THREAD)


class Delayed(DelegatingEncoder):
    """An encoder that sleeps `delay_s` per call, so a slice takes long enough to be killed in."""

    def __init__(self, inner: OnnxTextEncoder, delay_s: float) -> None:
        super().__init__(inner)
        self.delay_s = delay_s

    def encode(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.delay_s)
        return self.inner.encode(texts)


def slow_onnx_encoder(path: Path, delay_s: float) -> Delayed:
    return Delayed(onnx_encoder(path), delay_s)
