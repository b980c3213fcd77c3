"""Export a query model: the frozen encoder's ONNX graph with the query adapter folded in.

The directory is a text model directory (see `serving.models.model_dir`) whose `model.onnx` embeds
queries. With `document_dir` (the document model's registered directory: the frozen encoder's
graph, already parity-checked when it was registered) that graph, its tokenizer and `st/`
weights are taken as they are (files hard-linked, or copied across file systems), and only the
adapter is checked: a few held-out texts through the folded graph against the torch adapter
applied to the registered graph's own outputs: 2 s where re-exporting MiniLM and checking the
whole graph took 23 s (products-synth on 2 loaded cores, bench/README.md). Without one,
`tuner.export.export_text_model` writes the frozen encoder anew and the whole folded graph is
checked against torch. Either way the encoder's `sentence_embedding` output q becomes the input of

    MatMul(q, W^T) (or MatMul(MatMul(q, A^T), B^T))  ->  Add(q, .)  ->  LpNormalization(p=2)

which is the new `sentence_embedding` (`QueryAdapter`: q' = normalize(q + W q)). The graph runs
through serving's own `OnnxTextEncoder` for the check; below the threshold `ExportParityError`
is raised and no `clicktune.json` is left behind.
`clicktune.json` says `"kind": "query"` and `"document_model"`: the version whose index this
model searches ("query model X over document model Y"); the rollout refuses any other index.

A query tower (`export_query_tower`) is exported as a graph of its own, checked whole, with the
frozen encoder's weights beside it in `st/` (what the next round embeds documents with) and the
tower's in `query_st/`; `clicktune.json` says `"query_tower"`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import helper, numpy_helper
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

from serving.encoders.encoder import OUTPUT, OnnxTextEncoder
from tuner.base_models import TORCH_WEIGHTS_DIR
from tuner.errors import ExportError, ExportParityError
from tuner.export import (
    FORMAT,
    METADATA_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    ExportReport,
    export_text_model,
)
from tuner.parity_texts import parity_texts
from tuner.query_adapter import ADAPTER_FILE, QueryAdapter, encode_queries, save_adapter

__all__ = ["QUERY_KIND", "export_query_model", "export_query_tower", "fold_adapter"]

QUERY_KIND = "query"
_BASE_OUTPUT = "base_sentence_embedding"
ADAPTER_PARITY_TEXTS = 8  # the registered graph was checked whole; these check the fold


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
    document_dir: Path | None = None,
) -> ExportReport:
    """Write the query model directory of `adapter` over the frozen `encoder` (the model that
    built `document_model`'s index) into `out_dir`: folded into `document_dir`'s registered
    graph when given (adapter checked), else into a fresh export (whole graph checked)."""
    started = time.perf_counter()
    texts = list(held_out_texts) if held_out_texts else parity_texts()
    if document_dir is not None:
        base = _take_document_model(document_dir, out_dir, adapter, version, parent, base_model)
        base["max_length"] = max_length
        checked = texts[:ADAPTER_PARITY_TEXTS]
        cosine = _adapter_parity(document_dir, out_dir, adapter, checked, max_length)
    else:
        exported = export_text_model(
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
        base = exported.metadata
        fold_adapter(out_dir / ONNX_FILE, adapter)
        cosine = _parity_min_cosine(encoder, adapter, out_dir, texts, max_length)
    save_adapter(adapter, out_dir / ADAPTER_FILE)
    if cosine < min_cosine:
        raise ExportParityError(cosine, min_cosine)
    side = {"query_adapter": {**adapter.get_config_dict(), "parameters": adapter.parameters_count}}
    metadata = _write_metadata(
        out_dir, base, document_model, side, metrics, parity_min_cosine=round(cosine, 7)
    )
    return ExportReport.written(out_dir, metadata, cosine=cosine, started=started)


def export_query_tower(
    tower: SentenceTransformer,
    encoder: SentenceTransformer,
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
    document_dir: Path | None = None,
) -> ExportReport:
    """Write the query model directory of a query `tower` over the frozen `encoder` (the model
    that built `document_model`'s index): the tower's own graph, checked whole against torch, its
    weights in `query_st/` and the frozen encoder's in `st/` (linked from `document_dir`'s)."""
    from tuner.query_tower import QUERY_TOWER_DIR

    exported = export_text_model(
        tower,
        out_dir,
        version=version,
        parent=parent,
        base_model=base_model,
        max_length=max_length,
        held_out_texts=held_out_texts,
        min_cosine=min_cosine,
        opset_version=opset_version,
    )
    (out_dir / METADATA_FILE).unlink()  # a text model's metadata, until the pairing is whole
    (out_dir / TORCH_WEIGHTS_DIR).rename(out_dir / QUERY_TOWER_DIR)
    if document_dir is not None:
        weights = document_dir / TORCH_WEIGHTS_DIR
        shutil.copytree(weights, out_dir / TORCH_WEIGHTS_DIR, copy_function=_link_or_copy)
    else:
        encoder.save(str(out_dir / TORCH_WEIGHTS_DIR), create_model_card=False)
    side = {"query_tower": {"weights": QUERY_TOWER_DIR}}
    metadata = _write_metadata(out_dir, exported.metadata, document_model, side, metrics)
    return replace(exported, metadata=metadata)


def _write_metadata(
    out_dir: Path,
    base: Mapping[str, Any],
    document_model: str,
    side: Mapping[str, Any],
    metrics: Mapping[str, Any] | None,
    **checks: Any,
) -> dict[str, Any]:
    """Write and return the query model's metadata: the text model's `base` made kind query
    over `document_model`, with its query `side` (`query_adapter` or `query_tower`), `metrics`
    and the export's `checks`."""
    metadata = {
        **base,
        "kind": QUERY_KIND,
        "document_model": document_model,
        **side,
        "metrics": dict(metrics or {}),
        **checks,
    }
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def _take_document_model(
    document_dir: Path,
    out_dir: Path,
    adapter: QueryAdapter,
    version: str,
    parent: str | None,
    base_model: str,
) -> dict[str, Any]:
    """`document_dir`'s graph with `adapter` folded in, its tokenizer and torch weights, in
    `out_dir`; the text model metadata of the result (kind and pairing added by the caller)."""
    meta = json.loads((document_dir / METADATA_FILE).read_text())
    if meta.get("kind") != "text" or meta.get("dimension") != adapter.dimension:
        raise ExportError(
            f"{document_dir}: a query adapter of dimension {adapter.dimension} folds only into a "
            f"text model of that dimension; this one is kind {meta.get('kind')!r}, dimension "
            f"{meta.get('dimension')!r}"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    _link_or_copy(str(document_dir / TOKENIZER_FILE), str(out_dir / TOKENIZER_FILE))
    shutil.copytree(
        document_dir / TORCH_WEIGHTS_DIR, out_dir / TORCH_WEIGHTS_DIR, copy_function=_link_or_copy
    )
    fold_adapter(out_dir / ONNX_FILE, adapter, source=document_dir / ONNX_FILE)
    return {
        "format": FORMAT,
        "version": version,
        "dimension": adapter.dimension,
        "base_model": base_model,
        "parent": parent,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def _link_or_copy(src: str, dst: str) -> str:
    """A hard link to a registered (never rewritten) file; a copy across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def fold_adapter(path: Path, adapter: QueryAdapter, source: Path | None = None) -> None:
    """Rewrite the text encoder graph at `path` (read from `source` when given) so its
    `sentence_embedding` is the adapter's q' = normalize(q + W q) of the encoder's own
    (L2-normalised) output q."""
    model = onnx.load(str(source or path))
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
    served = _served(out_dir, adapter.dimension, texts, max_length)  # (N, D)
    reference = encode_queries(encoder, adapter, texts, max_length)  # (N, D)
    return float(np.sum(served * reference, axis=1).min())  # both L2-normalised


def _adapter_parity(
    document_dir: Path,
    out_dir: Path,
    adapter: QueryAdapter,
    texts: Sequence[str],
    max_length: int,
) -> float:
    """Min cosine between the folded graph and the torch adapter applied to the registered
    document graph's outputs, both run by serving's encoder on `texts`."""
    frozen = _served(document_dir, adapter.dimension, texts, max_length)  # (N, D)
    folded = _served(out_dir, adapter.dimension, texts, max_length)  # (N, D)
    with torch.no_grad():
        reference = adapter.to("cpu").eval()(torch.from_numpy(frozen)).numpy()  # (N, D)
    return float(np.sum(folded * reference, axis=1).min())  # both L2-normalised


def _served(model_dir: Path, dimension: int, texts: Sequence[str], max_length: int) -> np.ndarray:
    """`texts` embedded by serving's encoder on `model_dir`'s graph and tokenizer."""
    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length)
    session = ort.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    encoder = OnnxTextEncoder(
        session, tokenizer, version="parity", dimension=dimension, batch_size=8
    )
    return encoder.encode(list(texts))
