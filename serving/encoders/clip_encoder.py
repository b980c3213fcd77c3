"""Both towers of an open_clip model on onnxruntime or OpenVINO + tokenizers + PIL, no torch.

A CLIP model directory (`kind: "clip"`, see `serving.models.model_dir`) holds the text tower as
`model.onnx` (input_ids int64 [batch, seq <= context_length] -> sentence_embedding, padded to the
context length and L2-normalised inside the graph), the image tower as `image.onnx` (pixel_values
float32 [batch, 3, H, W] -> image_embedding, L2-normalised), and the open_clip BPE tokenizer as
`tokenizer.json`. `encode` makes `OnnxClipEncoder` an `Encoder` for queries; `encode_images`
embeds images into the same space.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tokenizers import Tokenizer

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.image_preprocess import ImagePreprocessing
from serving.encoders.runtime import GraphSession, open_session
from serving.encoders.runtime_choice import PROCESS_RUNTIMES
from serving.errors import ModelLoadError
from serving.models.model_dir import read_model_meta

__all__ = ["IMAGE_FILE", "OnnxClipEncoder"]

IMAGE_FILE = "image.onnx"
TEXT_OUTPUT = "sentence_embedding"
IMAGE_OUTPUT = "image_embedding"


class OnnxClipEncoder:
    """Text and image towers of one CLIP model version, on the configured runtime."""

    def __init__(
        self,
        text_session: GraphSession,
        image_session: GraphSession,
        tokenizer: Tokenizer,
        preprocessing: ImagePreprocessing,
        *,
        version: str,
        dimension: int,
        pad_id: int,
        batch_size: int,
    ) -> None:
        self._text = text_session
        self._image = image_session
        self._tokenizer = tokenizer
        self._preprocess = preprocessing
        self._version = version
        self._dimension = dimension
        self._pad_id = pad_id
        self._batch_size = batch_size
        self.graph = "model.onnx + image.onnx"  # what runs, for refusals

    @classmethod
    def from_dir(cls, path: Path, settings: EncoderSettings) -> OnnxClipEncoder:
        """Load a CLIP model directory (kind "clip"); runtime `auto` as this process decided."""
        if settings.runtime is EncoderRuntime.auto:
            return PROCESS_RUNTIMES.load(path, "clip", settings, cls.from_dir)  # type: ignore[return-value]
        meta = read_model_meta(path, error=ModelLoadError)
        if meta["kind"] != "clip":
            raise ModelLoadError(f"{path}: kind {meta['kind']!r} is not a CLIP model")
        return cls.from_files(Path(path), meta, settings)

    @classmethod
    def from_files(
        cls, path: Path, meta: Mapping[str, Any], settings: EncoderSettings
    ) -> OnnxClipEncoder:
        """Load the graphs and tokenizer under `path` with metadata `meta` (not yet on disk), on
        a concrete runtime (the export's check: `auto` is decided on registered models only)."""
        if not isinstance(meta.get("image"), Mapping):
            raise ModelLoadError(f"{path}: CLIP metadata needs an 'image' section, got {meta!r}")
        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        tokenizer.no_padding()  # padded per batch here, to the context length in the graph
        tokenizer.enable_truncation(max_length=int(meta["max_length"]))
        encoder = cls(
            _session(path / "model.onnx", settings),
            _session(path / IMAGE_FILE, settings),
            tokenizer,
            ImagePreprocessing.from_meta(meta["image"]),
            version=meta["version"],
            dimension=meta["dimension"],
            pad_id=int(meta.get("pad_id", 0)),
            batch_size=settings.batch_size,
        )
        encoder.graph = f"model.onnx + {IMAGE_FILE} on {settings.runtime.value}"
        return encoder

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def version(self) -> str:
        return self._version

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the text tower sees for `texts` (after truncation), for usage reporting."""
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts))

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed texts with the text tower: float32 [len(texts), dimension], unit rows."""
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(texts)
        for start in range(0, len(texts), self._batch_size):
            rows = encodings[start : start + self._batch_size]
            width = max(len(e.ids) for e in rows)
            ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)  # (batch, seq)
            for row, enc in enumerate(rows):
                ids[row, : len(enc.ids)] = enc.ids
            out[start : start + len(rows)] = self._run(self._text, TEXT_OUTPUT, "input_ids", ids)
        return out

    def preprocess(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One image -> float32 (3, H, W) pixels, which `encode_images` takes as they are; lets
        a caller free a full-size image before the next one is decoded."""
        return self._preprocess(image)

    def encode_images(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """Embed images (PIL, uint8 HxWx3, or `preprocess` output) with the image tower:
        float32 [N, dimension]."""
        out = np.zeros((len(images), self._dimension), dtype=np.float32)
        for start in range(0, len(images), self._batch_size):
            pixels = self._preprocess.batch(images[start : start + self._batch_size])
            out[start : start + len(pixels)] = self._run(
                self._image, IMAGE_OUTPUT, "pixel_values", pixels
            )
        return out

    def _run(self, session: Any, output: str, name: str, feed: np.ndarray) -> np.ndarray:
        (vectors,) = session.run([output], {name: feed})  # (batch, dimension)
        if vectors.shape[1] != self._dimension:
            raise ModelLoadError(
                f"model {self._version!r} returned dimension {vectors.shape[1]} from {output}, "
                f"but clicktune.json says {self._dimension}"
            )
        return vectors.astype(np.float32, copy=False)


def _session(graph: Path, settings: EncoderSettings) -> GraphSession:
    if not graph.is_file():
        raise ModelLoadError(f"CLIP model directory {graph.parent} has no {graph.name}")
    return open_session(graph, settings)
