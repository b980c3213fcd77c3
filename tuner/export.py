"""Export a sentence-transformers text model to the model directory that serving reads.

The directory holds `model.onnx` (transformer + mean pooling + L2 normalisation in one graph,
dynamic batch and sequence axes), `tokenizer.json`, `clicktune.json` (metadata) and `st/` (the
torch weights, so the next iteration can start from this model). The ONNX graph is checked
against torch on held-out texts through the same tokenizer file serving uses; below the cosine
threshold nothing is written to `clicktune.json` and `ExportParityError` is raised.
"""

from __future__ import annotations

import inspect
import json
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from tuner import progress
from tuner.base_models import TORCH_WEIGHTS_DIR
from tuner.errors import ExportError, ExportParityError
from tuner.parity_texts import parity_texts

__all__ = ["ExportReport", "MeanPooledEncoder", "export_text_model"]

FORMAT = 1
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
METADATA_FILE = "clicktune.json"
PARITY_BATCH = 8


@dataclass(frozen=True)
class ExportReport:
    """Where the model directory is and how faithful its ONNX graph is."""

    path: Path
    version: str
    dimension: int
    parity_min_cosine: float
    onnx_bytes: int
    seconds: float
    metadata: dict[str, Any]

    @classmethod
    def written(
        cls,
        out_dir: Path,
        metadata: dict[str, Any],
        *,
        cosine: float,
        started: float,
        graphs: Sequence[str] = (ONNX_FILE,),
    ) -> ExportReport:
        """The report of the model directory just written to `out_dir`: `metadata` is its
        `clicktune.json`, `graphs` its ONNX files, `started` the `time.perf_counter()` the
        export began at."""
        return cls(
            path=out_dir,
            version=metadata["version"],
            dimension=int(metadata["dimension"]),
            parity_min_cosine=cosine,
            onnx_bytes=sum((out_dir / graph).stat().st_size for graph in graphs),
            seconds=round(time.perf_counter() - started, 3),
            metadata=metadata,
        )


class MeanPooledEncoder(nn.Module):
    """transformer -> mean over real tokens -> L2 normalise: what sentence-transformers does."""

    def __init__(self, transformer: nn.Module, uses_token_type_ids: bool) -> None:
        super().__init__()
        self.transformer = transformer
        self.uses_token_type_ids = uses_token_type_ids

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        kwargs = {"token_type_ids": token_type_ids} if self.uses_token_type_ids else {}
        tokens = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, **kwargs
        ).last_hidden_state  # (B, S, D)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # (B, S, 1)
        summed = (tokens * mask).sum(dim=1)  # (B, D)
        counts = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        return F.normalize(summed / counts, p=2, dim=1)  # (B, D)


def export_text_model(
    model: SentenceTransformer,
    out_dir: Path,
    *,
    version: str,
    parent: str | None,
    base_model: str,
    max_length: int = 256,
    metrics: Mapping[str, Any] | None = None,
    held_out_texts: Sequence[str] | None = None,
    min_cosine: float = 0.9999,
    opset_version: int = 17,
) -> ExportReport:
    """Write the model directory for `model` into `out_dir` and check ONNX against torch."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    encoder = MeanPooledEncoder(_transformer_of(model), _uses_token_type_ids(model))
    input_names = ["input_ids", "attention_mask"]
    input_names += ["token_type_ids"] if encoder.uses_token_type_ids else []
    # steps: ONNX graph, tokenizer + torch weights, parity
    with progress.stage("export", "step", 3) as steps:
        _export_onnx(encoder, model, out_dir / ONNX_FILE, input_names, opset_version)
        steps.advance(last="onnx")
        model.tokenizer.backend_tokenizer.save(str(out_dir / TOKENIZER_FILE))
        model.save(str(out_dir / TORCH_WEIGHTS_DIR), create_model_card=False)
        steps.advance(last="weights")
        texts = list(held_out_texts) if held_out_texts else parity_texts()
        cosine = _parity_min_cosine(model, out_dir, texts, max_length)
        steps.advance(last="parity", min_cosine=f"{cosine:.6f}")
    if cosine < min_cosine:
        raise ExportParityError(cosine, min_cosine)
    metadata = _metadata(version, parent, base_model, model, max_length, metrics, cosine)
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return ExportReport.written(out_dir, metadata, cosine=cosine, started=started)


def _transformer_of(model: SentenceTransformer) -> nn.Module:
    """The Hugging Face transformer, after checking the pipeline is Transformer + mean Pooling."""
    modules: list[Any] = list(model)
    kinds = [type(m).__name__ for m in modules]
    pooling = modules[1].get_config_dict() if len(modules) > 1 else {}
    if kinds[:2] != ["Transformer", "Pooling"] or pooling.get("pooling_mode", "mean") != "mean":
        raise ExportError(
            f"cannot export model with modules {kinds} and pooling {pooling}: only "
            f"Transformer + mean Pooling (+ Normalize) is supported"
        )
    if any(k not in ("Normalize",) for k in kinds[2:]):
        raise ExportError(f"cannot export modules {kinds[2:]} after pooling: only Normalize")
    transformer: nn.Module = modules[0].auto_model
    return transformer


def _uses_token_type_ids(model: SentenceTransformer) -> bool:
    first: Any = model[0]
    forward = inspect.signature(first.auto_model.forward).parameters
    names = getattr(model.tokenizer, "model_input_names", ["token_type_ids"])
    return "token_type_ids" in forward and "token_type_ids" in names


def _export_onnx(
    encoder: MeanPooledEncoder,
    model: SentenceTransformer,
    path: Path,
    input_names: list[str],
    opset_version: int,
) -> None:
    sample = model.tokenizer(
        ["an example query", "a longer example document text for tracing"],
        padding=True,
        return_tensors="pt",
    )
    args = tuple(sample[name].to(torch.int64) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["sentence_embedding"] = {0: "batch"}
    try:
        with quiet_tracing():
            torch.onnx.export(
                encoder,
                args,
                str(path),
                input_names=input_names,
                output_names=["sentence_embedding"],
                dynamic_axes=axes,
                opset_version=opset_version,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"torch.onnx.export to {str(path)!r} failed: {exc}") from exc


def _parity_min_cosine(
    model: SentenceTransformer, out_dir: Path, texts: Sequence[str], max_length: int
) -> float:
    """Min cosine between torch and onnxruntime (tokenised from tokenizer.json) over `texts`."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out_dir / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length)
    tokenizer.enable_padding()
    session = ort.InferenceSession(str(out_dir / ONNX_FILE), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    onnx_out = np.concatenate(
        [
            _run_onnx(session, wanted, tokenizer.encode_batch(list(texts[i : i + PARITY_BATCH])))
            for i in range(0, len(texts), PARITY_BATCH)
        ]
    )  # (N, D)
    saved_length = model.max_seq_length
    model.max_seq_length = max_length
    try:
        reference = model.encode(
            list(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
    finally:
        model.max_seq_length = saved_length
    cosines = np.sum(onnx_out * reference, axis=1)  # both L2-normalised: (N,)
    return float(cosines.min())


def _run_onnx(session: Any, wanted: set[str], encodings: Sequence[Any]) -> np.ndarray:
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    return session.run(["sentence_embedding"], {k: v for k, v in feeds.items() if k in wanted})[0]


def _metadata(
    version: str,
    parent: str | None,
    base_model: str,
    model: SentenceTransformer,
    max_length: int,
    metrics: Mapping[str, Any] | None,
    cosine: float,
) -> dict[str, Any]:
    dimension = (
        model.get_embedding_dimension()
        if hasattr(model, "get_embedding_dimension")
        else model.get_sentence_embedding_dimension()
    )
    if dimension is None:
        raise ExportError("the model does not report its embedding dimension")
    return {
        "format": FORMAT,
        "kind": "text",
        "version": version,
        "dimension": int(dimension),
        "max_length": max_length,
        "base_model": base_model,
        "parent": parent,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "metrics": dict(metrics or {}),
        "parity_min_cosine": round(cosine, 7),
    }


@contextmanager
def quiet_tracing() -> Iterator[None]:
    """No gradients, and none of the tracer's notes on shape-dependent Python branches or legacy
    exporter warnings during `torch.onnx.export`: the parity check guards what they warn of."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        yield
