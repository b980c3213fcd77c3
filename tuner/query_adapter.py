"""Tune the query side only: a residual adapter on the query embedding, documents frozen.

A query model is the frozen encoder the live index was built with, followed by `QueryAdapter`:

    q  = encoder(query)                     (D,) L2-normalised, as the index's documents
    q' = normalize(q + W q)                 W: (D, D), or W = B A of rank r (A: (r, D), B: (D, r))

W (or B) starts at zero, so an untrained adapter is the identity and the model embeds queries
exactly as the live one. Training uses the same pairs, weights and loss as a full fine-tune
(`WeightedInfoNCELoss`: in-batch negatives plus the first hard negative of each pair), with every
document vector, and every base query vector, computed once by the frozen encoder: only the
adapter's few thousand parameters learn, in seconds on a CPU, and the index keeps its vectors
(no reindex). `tuner.export_query` folds the adapter into the encoder's ONNX graph.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sentence_transformers import SentenceTransformer
from torch import Tensor, nn

from tuner.config import TrainSettings
from tuner.errors import NoTrainingDataError, TrainConfigError
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair, query_key
from tuner.train import (
    TrainReport,
    positives_by_query,
    report_of,
    run_length,
    run_steps,
    shuffled_batches,
    usable_pairs,
    warmup_then_linear_decay,
)

__all__ = [
    "ADAPTER_FILE",
    "QueryAdapter",
    "QueryAdapterRun",
    "encode_frozen",
    "encode_queries",
    "fine_tune_query_adapter",
    "frozen_documents_loss",
    "load_adapter",
    "query_side_pairs",
    "save_adapter",
]

ADAPTER_FILE = "query_adapter.safetensors"
ENCODE_BATCH = 64


class QueryAdapter(nn.Module):
    """q' = normalize(q + W q) on (N, D) query embeddings; the identity until it is trained.

    `rank` 0: W is a full (D, D) matrix, zero at the start (D^2 parameters).
    `rank` r > 0: W = B A, A (r, D) random (as `nn.Linear`), B (D, r) zero (2 r D parameters),
    as LoRA initialises its adapters (Hu et al., "LoRA: Low-Rank Adaptation of Large Language
    Models", 2021), here on the pooled embedding instead of inside the transformer.
    """

    def __init__(self, dimension: int, rank: int = 8) -> None:
        super().__init__()
        if dimension < 1 or not 0 <= rank <= dimension:
            raise TrainConfigError(
                f"query adapter rank {rank} must be between 0 (a full matrix) and the embedding "
                f"dimension {dimension}"
            )
        self.dimension = dimension
        self.rank = rank
        if rank == 0:
            self.weight = nn.Parameter(torch.zeros(dimension, dimension))
        else:
            self.down = nn.Parameter(torch.empty(rank, dimension))
            nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
            self.up = nn.Parameter(torch.zeros(dimension, rank))

    def forward(self, queries: Tensor) -> Tensor:
        delta = queries
        for factor in self.factors():
            delta = delta @ factor  # (N, r) then (N, D); or (N, D) for a full W
        return F.normalize(queries + delta, p=2, dim=-1)  # (N, D)

    def factors(self) -> list[Tensor]:
        """The matrices a row vector q is multiplied by, in order, to give W q: [W^T] or
        [A^T, B^T]; the ONNX graph multiplies by the same ones."""
        if self.rank == 0:
            return [self.weight.T]
        return [self.down.T, self.up.T]

    @property
    def parameters_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def get_config_dict(self) -> dict[str, Any]:
        return {"dimension": self.dimension, "rank": self.rank}


@dataclass(frozen=True)
class QueryAdapterRun:
    """A trained adapter and the report of its run (`TrainReport`, as a full fine-tune's)."""

    adapter: QueryAdapter
    report: TrainReport


def fine_tune_query_adapter(
    encoder: SentenceTransformer,
    pairs: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    settings: TrainSettings,
    progress: bool = True,
    initial: QueryAdapter | None = None,
) -> QueryAdapterRun:
    """Train a `QueryAdapter` over the frozen `encoder` (the live index's model) on `pairs`.

    The encoder is only read, under `torch.no_grad`: its weights, and the document vectors the
    index holds, stay as they are. Steps: `max_steps`, else `epochs` passes over the pairs.
    `initial`: a trained adapter to go on from (the live query model's, left unchanged: a copy
    trains), instead of the identity."""
    used = query_side_pairs(pairs, doc_texts)
    torch.manual_seed(settings.seed)
    batch_size, steps = run_length(settings, len(used))
    started = time.perf_counter()
    frozen = _FrozenSide.of(encoder, used, doc_texts, settings.max_length)
    if initial is not None:
        adapter = copy.deepcopy(initial)
    else:
        adapter = QueryAdapter(frozen.queries.shape[1], settings.query_adapter_rank)
    adapter = adapter.to(frozen.queries.device)
    optimizer = torch.optim.AdamW(
        adapter.parameters(),
        lr=settings.query_adapter_learning_rate,
        weight_decay=settings.weight_decay,
    )
    scheduler = warmup_then_linear_decay(optimizer, steps, settings.warmup_ratio)
    loss_fn = WeightedInfoNCELoss(settings.temperature)
    step_fn = partial(
        _adapter_step, adapter, loss_fn, frozen=frozen, positives=positives_by_query(used)
    )
    adapter.train()
    batches = shuffled_batches(used, batch_size, settings.seed)
    losses = run_steps(step_fn, batches, optimizer, scheduler, steps, batch_size, progress)
    adapter.eval()
    device = str(frozen.queries.device)
    report = report_of(losses, len(used), len(pairs), started, batch_size, device, settings)
    return QueryAdapterRun(adapter, report)


@dataclass(frozen=True)
class _FrozenSide:
    """Every vector the frozen encoder gives in training, computed once: the base query vectors
    (the adapter's input) and the document vectors (what the index holds), by row."""

    queries: Tensor  # (Q, D)
    docs: Tensor  # (M, D)
    query_row: Mapping[str, int]
    doc_row: Mapping[str, int]

    @classmethod
    def of(
        cls,
        encoder: SentenceTransformer,
        pairs: Sequence[TrainingPair],
        doc_texts: Mapping[str, str],
        max_length: int,
    ) -> _FrozenSide:
        doc_ids = sorted(
            {p.positive_id for p in pairs} | {n for p in pairs for n in p.hard_negative_ids}
        )
        queries = sorted({p.query for p in pairs})
        return cls(
            queries=encode_frozen(encoder, queries, max_length),
            docs=encode_frozen(encoder, [doc_texts[d] for d in doc_ids], max_length),
            query_row={q: i for i, q in enumerate(queries)},
            doc_row={d: i for i, d in enumerate(doc_ids)},
        )


def _adapter_step(
    adapter: QueryAdapter,
    loss_fn: WeightedInfoNCELoss,
    batch: Sequence[TrainingPair],
    *,
    frozen: _FrozenSide,
    positives: Mapping[str, set[str]],
) -> Tensor:
    queries = adapter(frozen.queries[[frozen.query_row[p.query] for p in batch]])  # (B, D)
    return frozen_documents_loss(loss_fn, queries, batch, frozen.docs, frozen.doc_row, positives)


def frozen_documents_loss(
    loss_fn: WeightedInfoNCELoss,
    queries: Tensor,
    batch: Sequence[TrainingPair],
    docs: Tensor,
    doc_row: Mapping[str, int],
    positives: Mapping[str, set[str]],
) -> Tensor:
    """The loss of a query-side step: `queries` (B, D), the batch's trained query vectors,
    against the frozen document vectors `docs` (rows by `doc_row`) of every pair's positive and
    first hard negative; the same query's other positives are masked out."""
    device = queries.device
    negative_ids = [p.hard_negative_ids[0] for p in batch if p.hard_negative_ids]
    candidate_ids = [p.positive_id for p in batch] + negative_ids
    weights = torch.tensor([p.weight for p in batch], device=device)  # (B,)
    mask = torch.tensor(
        [[c in positives[query_key(p.query)] for c in candidate_ids] for p in batch],
        device=device,
    )  # (B, B + H)
    candidates = docs[[doc_row[c] for c in candidate_ids]].to(device)  # (B + H, D), frozen
    hard = candidates[len(batch) :] if negative_ids else None  # (H, D)
    return loss_fn(queries, candidates[: len(batch)], weights, hard, mask)


def query_side_pairs(
    pairs: Sequence[TrainingPair], doc_texts: Mapping[str, str]
) -> list[TrainingPair]:
    """The pairs a query-side run trains on (`usable_pairs`); `NoTrainingDataError` when none
    has a positive document with text."""
    used = usable_pairs(pairs, doc_texts)
    if not used:
        raise NoTrainingDataError(
            f"none of the {len(pairs)} training pairs has a positive document with text"
        )
    return used


def encode_frozen(encoder: SentenceTransformer, texts: Sequence[str], max_length: int) -> Tensor:
    """L2-normalised embeddings of `texts` by `encoder` cut at `max_length` tokens, without
    gradients (the vectors the document index holds, or the adapter's input)."""
    saved = encoder.max_seq_length
    encoder.max_seq_length = max_length
    try:
        with torch.no_grad():
            vectors = encoder.encode(
                list(texts),
                batch_size=ENCODE_BATCH,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
    finally:
        encoder.max_seq_length = saved
    return vectors.float().detach()  # (N, D)


def encode_queries(
    encoder: SentenceTransformer, adapter: QueryAdapter, texts: Sequence[str], max_length: int
) -> np.ndarray:
    """What the query model embeds for `texts` in torch: (N, D) float32, L2-normalised."""
    base = encode_frozen(encoder, texts, max_length)
    with torch.no_grad():
        return adapter.to(base.device)(base).cpu().numpy().astype(np.float32)


def save_adapter(adapter: QueryAdapter, path: Path) -> None:
    """Write the adapter's weights (safetensors); its config goes into `clicktune.json`."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}, path)


def load_adapter(path: Path, config: Mapping[str, Any]) -> QueryAdapter:
    """The adapter saved at `path` with `config` (`QueryAdapter.get_config_dict()`)."""
    from safetensors.torch import load_file

    adapter = QueryAdapter(int(config["dimension"]), int(config["rank"]))
    adapter.load_state_dict(load_file(path))
    return adapter.eval()
