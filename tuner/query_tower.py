"""Tune the query side only with a tower of its own: a full copy of the text encoder for queries.

A query tower is the text encoder the live index was built with, copied and trained on queries
alone, while that encoder (the document tower) stays frozen:

    q = normalize(tower(query))              every weight of the copy learns
    d = normalize(encoder(document))         frozen: the vectors the index holds

Training uses the same pairs, weights and loss as a full fine-tune (`WeightedInfoNCELoss`:
in-batch negatives plus the first hard negative of each pair) and the full fine-tune's learning
rate; the document vectors are computed once by the frozen encoder, so a step costs one forward
and backward pass over the batch's queries only. It moves more weights than `query_adapter` (the
whole tower against a few thousand) and its export is a graph of its own
(`tuner.export_query.export_query_tower`); like the adapter it deploys with no reindex.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor

from tuner.config import TrainSettings
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair
from tuner.query_adapter import encode_frozen, frozen_documents_loss, query_side_pairs
from tuner.train import (
    TrainReport,
    embed,
    positives_by_query,
    report_of,
    run_length,
    run_steps,
    shuffled_batches,
    warmup_then_linear_decay,
)

__all__ = ["QUERY_TOWER_DIR", "QueryTowerRun", "fine_tune_query_tower"]

QUERY_TOWER_DIR = "query_st"  # the tower's torch weights; `st/` holds the frozen encoder's


@dataclass(frozen=True)
class QueryTowerRun:
    """A trained query tower and the report of its run (`TrainReport`, as a full fine-tune's)."""

    tower: SentenceTransformer
    report: TrainReport


def fine_tune_query_tower(
    encoder: SentenceTransformer,
    pairs: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    settings: TrainSettings,
    progress: bool = True,
    initial: SentenceTransformer | None = None,
) -> QueryTowerRun:
    """Train a query tower over the frozen `encoder` (the live index's model) on `pairs`.

    The tower starts as a copy of `initial` (the live query tower: it goes on from it) or of
    `encoder`; neither is changed. Steps: `max_steps`, else `epochs` passes over the pairs."""
    used = query_side_pairs(pairs, doc_texts)
    torch.manual_seed(settings.seed)
    batch_size, steps = run_length(settings, len(used))
    started = time.perf_counter()
    doc_ids = sorted({p.positive_id for p in used} | {n for p in used for n in p.hard_negative_ids})
    docs = encode_frozen(encoder, [doc_texts[d] for d in doc_ids], settings.max_length)  # (M, D)
    tower = copy.deepcopy(initial if initial is not None else encoder)
    tower.max_seq_length = settings.max_length
    optimizer = torch.optim.AdamW(
        tower.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    scheduler = warmup_then_linear_decay(optimizer, steps, settings.warmup_ratio)
    step_fn = partial(
        _tower_step,
        tower,
        WeightedInfoNCELoss(settings.temperature),
        docs=docs,
        doc_row={d: i for i, d in enumerate(doc_ids)},
        positives=positives_by_query(used),
    )
    tower.train()
    batches = shuffled_batches(used, batch_size, settings.seed)
    losses = run_steps(step_fn, batches, optimizer, scheduler, steps, batch_size, progress)
    tower.eval()
    device = str(tower.device)
    report = report_of(losses, len(used), len(pairs), started, batch_size, device, settings)
    return QueryTowerRun(tower, report)


def _tower_step(
    tower: SentenceTransformer,
    loss_fn: WeightedInfoNCELoss,
    batch: Sequence[TrainingPair],
    *,
    docs: Tensor,
    doc_row: Mapping[str, int],
    positives: Mapping[str, set[str]],
) -> Tensor:
    device = str(tower.device)
    queries = embed(tower, [p.query for p in batch], device)  # (B, D), the loss normalises
    return frozen_documents_loss(loss_fn, queries, batch, docs, doc_row, positives)
