"""The model directory contract shared by the tuner (writer) and serving (reader).

model.onnx      inputs input_ids, attention_mask (+ token_type_ids if the model takes it),
                int64 [batch, seq]; output sentence_embedding float32 [batch, dim], pooled
                and L2-normalised inside the graph
tokenizer.json  a `tokenizers` tokenizer (truncation and padding are set by the reader)
clicktune.json  {"format": 1, "kind": "text", "version", "dimension", "max_length",
                 "base_model", "parent", "created_at", "metrics", "parity_min_cosine"}

A CLIP model (`kind: "clip"`, read by `serving.encoders.clip_encoder`) differs: model.onnx is the
text tower (input input_ids int64 [batch, seq <= max_length] only; padded to the context length with
`pad_id` inside the graph), image.onnx the image tower (pixel_values float32 [batch, 3, H, W] ->
image_embedding), and clicktune.json adds "pad_id" and "image": {"size", "mean", "std",
"interpolation", "resize_mode"}, the preprocessing serving repeats with PIL.

A query model (`kind: "query"`, written by `tuner.export_query`) embeds queries only, over the
frozen encoder of another version: model.onnx is that encoder's graph with a residual adapter
folded in (same inputs and output), and clicktune.json adds "document_model" (the version whose
index it searches: "query model X over document model Y") and "query_adapter" ({"dimension",
"rank", "parameters"}; its weights in query_adapter.safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from serving.errors import ServingError

__all__ = ["FORMAT", "META_FILE", "MODEL_FILES", "read_model_meta"]

FORMAT = 1
META_FILE = "clicktune.json"
MODEL_FILES = ("model.onnx", "tokenizer.json", META_FILE)
_REQUIRED = {"format": int, "kind": str, "version": str, "dimension": int, "max_length": int}


def read_model_meta(path: Path, error: type[ServingError] = ServingError) -> dict[str, Any]:
    """Check that `path` holds a model directory and return its `clicktune.json`."""
    path = Path(path)
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise error(f"{path} is not a model directory: missing {', '.join(missing)}")
    try:
        meta = json.loads((path / META_FILE).read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path / META_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict):
        raise error(f"{path / META_FILE} must hold a JSON object")
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind):
            raise error(
                f"{path / META_FILE}: {key!r} must be a {kind.__name__}, got {meta.get(key)!r}"
            )
    if meta["format"] != FORMAT:
        raise error(f"{path / META_FILE}: format {meta['format']} is not supported (want {FORMAT})")
    if meta["dimension"] < 1:
        raise error(f"{path / META_FILE}: dimension {meta['dimension']} must be positive")
    if meta["kind"] == "query" and not isinstance(meta.get("document_model"), str):
        raise error(
            f"{path / META_FILE}: a query model must name its 'document_model' (the version "
            f"whose index it searches), got {meta.get('document_model')!r}"
        )
    return meta
