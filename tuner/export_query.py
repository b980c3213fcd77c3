"""Export a query model: the frozen encoder's ONNX graph with the query adapter folded in.

The directory is a text model directory (see `serving.model_dir`) whose `model.onnx` embeds
queries: `tuner.export.export_text_model` writes the frozen encoder (graph, tokenizer, `st/`
weights), then its `sentence_embedding` output q becomes the input of

    MatMul(q, W^T) (or MatMul(MatMul(q, A^T), B^T))  ->  Add(q, .)  ->  LpNormalization(p=2)

which is the new `sentence_embedding` (`QueryAdapter`: q' = normalize(q + W q)). The graph is
checked against the torch adapter on held-out texts through serving's own `OnnxTextEncoder`;
below the threshold `ExportParityError` is raised and no `clicktune.json` is left behind.
`clicktune.json` says `"kind": "query"` and `"document_model"`: the version whose index this
model searches ("query model X over document model Y"); the rollout refuses any other index.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

from serving.encoder import OUTPUT, OnnxTextEncoder
from tuner.errors import ExportError, ExportParityError
from tuner.export import METADATA_FILE, ONNX_FILE, TOKENIZER_FILE, ExportReport, export_text_model
from tuner.parity_texts import parity_texts
from tuner.query_adapter import ADAPTER_FILE, QueryAdapter, encode_queries, save_adapter

__all__ = ["QUERY_KIND", "export_query_model", "fold_adapter"]

QUERY_KIND = "query"
_BASE_OUTPUT = "base_sentence_embedding"


def export_query_model(
    encoder: SentenceTransformer,
    adapter: QueryAdapter,
    out_dir: Path,
    *,
    version: str,
    document_model: str,
    parent: str | None,
    base_model: str,
    max_length: int = 256,
    metrics: Mapping[str, Any] | None = None,
    held_out_texts: Sequence[str] | None = None,
    min_cosine: float = 0.9999,
    opset_version: int = 17,
) -> ExportReport:
    """Write the query model directory of `adapter` over the frozen `encoder` (the model that
    built `document_model`'s index) into `out_dir`, checked against torch."""
    started = time.perf_counter()
    texts = list(held_out_texts) if held_out_texts else parity_texts()
    base = export_text_model(
        encoder,
        out_dir,
        version=version,
        parent=parent,
        base_model=base_model,
        max_length=max_length,
        held_out_texts=texts,
        min_cosine=min_cosine,
        opset_version=opset_version,
    )
    (out_dir / METADATA_FILE).unlink()  # a text model's metadata, until the query graph passes
    fold_adapter(out_dir / ONNX_FILE, adapter)
    save_adapter(adapter, out_dir / ADAPTER_FILE)
    cosine = _parity_min_cosine(encoder, adapter, out_dir, texts, max_length)
    if cosine < min_cosine:
        raise ExportParityError(cosine, min_cosine)
    metadata = {
        **base.metadata,
        "kind": QUERY_KIND,
        "document_model": document_model,
        "query_adapter": {**adapter.get_config_dict(), "parameters": adapter.parameters_count},
        "metrics": dict(metrics or {}),
        "parity_min_cosine": round(cosine, 7),
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return ExportReport(
        path=out_dir,
        version=version,
        dimension=base.dimension,
        parity_min_cosine=cosine,
        onnx_bytes=(out_dir / ONNX_FILE).stat().st_size,
        seconds=round(time.perf_counter() - started, 3),
        metadata=metadata,
    )


def fold_adapter(path: Path, adapter: QueryAdapter) -> None:
    """Rewrite the text encoder graph at `path` so its `sentence_embedding` is the adapter's
    q' = normalize(q + W q) of the encoder's own (L2-normalised) output q."""
    model = onnx.load(str(path))
    graph = model.graph
    if [o.name for o in graph.output] != [OUTPUT]:
        raise ExportError(
            f"{path}: outputs {[o.name for o in graph.output]}, want only {OUTPUT!r} to fold into"
        )
    for node in graph.node:
        node.output[:] = [_BASE_OUTPUT if n == OUTPUT else n for n in node.output]
        node.input[:] = [_BASE_OUTPUT if n == OUTPUT else n for n in node.input]
    product = _BASE_OUTPUT
    for i, factor in enumerate(adapter.factors()):
        weight = factor.detach().cpu().numpy().astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(weight, f"query_adapter.factor{i}"))
        graph.node.append(
            helper.make_node(
                "MatMul", [product, f"query_adapter.factor{i}"], [f"query_adapter.product{i}"]
            )
        )  # (batch, r) then (batch, D)
        product = f"query_adapter.product{i}"
    graph.node.extend(
        [
            helper.make_node("Add", [_BASE_OUTPUT, product], ["query_adapter.sum"]),
            helper.make_node("LpNormalization", ["query_adapter.sum"], [OUTPUT], axis=-1, p=2),
        ]
    )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the query adapter could not be folded into {path}: {exc}") from exc
    onnx.save(model, str(path))


def _parity_min_cosine(
    encoder: SentenceTransformer,
    adapter: QueryAdapter,
    out_dir: Path,
    texts: Sequence[str],
    max_length: int,
) -> float:
    """Min cosine between the torch query model and serving's encoder on the folded graph."""
    tokenizer = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length)
    session = ort.InferenceSession(str(out_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    served = OnnxTextEncoder(
        session, tokenizer, version="parity", dimension=adapter.dimension, batch_size=8
    ).encode(list(texts))  # (N, D)
    reference = encode_queries(encoder, adapter, texts, max_length)  # (N, D)
    return float(np.sum(served * reference, axis=1).min())  # both L2-normalised
