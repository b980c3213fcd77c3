"""Fine-tune a sentence-transformers model on weighted training pairs (a plain torch loop)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor
from tqdm.auto import tqdm

from tuner.config import TrainSettings
from tuner.effective_batch import EffectiveBatches
from tuner.errors import NoTrainingDataError
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair, query_key
from tuner.progress import stage as progress_stage
from tuner.trainable import trainable_text_model

__all__ = [
    "TrainReport",
    "embed",
    "fine_tune",
    "positives_by_query",
    "report_of",
    "run_steps",
    "shuffled_batches",
    "usable_pairs",
    "warmup_then_linear_decay",
]

CURVE_POINTS = 20


@dataclass(frozen=True)
class TrainReport:
    """What one fine-tuning run did; `loss_curve` is the mean loss over equal slices of steps."""

    steps: int
    pairs: int
    dropped_pairs: int
    first_loss: float
    final_loss: float
    loss_curve: tuple[float, ...]
    seconds: float
    pairs_per_s: float
    device: str
    config: dict[str, Any] = field(default_factory=dict)
    effective_batch: float | None = None  # mean Kish (sum w)^2 / sum w^2 per step


def fine_tune(
    model: SentenceTransformer,
    pairs: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    settings: TrainSettings,
    progress: bool = True,
) -> TrainReport:
    """Train `model` in place on `pairs` for `max_steps` (or `epochs`) and report how it went."""
    used = usable_pairs(pairs, doc_texts)
    if not used:
        raise NoTrainingDataError(
            f"none of the {len(pairs)} training pairs has a positive document with text "
            f"(is the document index the one the sessions were served from?)"
        )
    torch.manual_seed(settings.seed)
    batch_size = min(settings.batch_size, len(used))
    steps = settings.max_steps or settings.epochs * math.ceil(len(used) / batch_size)
    model.max_seq_length = settings.max_length
    loss_fn = WeightedInfoNCELoss(settings.temperature)
    positives = positives_by_query(used)
    device = str(model.device)
    started = time.perf_counter()
    model.train()
    with trainable_text_model(model, settings) as params:
        optimizer = torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        scheduler = warmup_then_linear_decay(optimizer, steps, settings.warmup_ratio)
        step_fn = partial(
            _train_step, model, loss_fn, doc_texts=doc_texts, positives=positives, device=device
        )
        effective = EffectiveBatches()
        batches = effective.track(shuffled_batches(used, batch_size, settings.seed))
        losses = run_steps(step_fn, batches, optimizer, scheduler, steps, batch_size, progress)
    model.eval()
    effective.report(batch_size)
    report = report_of(losses, len(used), len(pairs), started, batch_size, device, settings)
    return replace(report, effective_batch=effective.mean())


def report_of(
    losses: Sequence[float],
    used: int,
    given: int,
    started: float,
    batch_size: int,
    device: str,
    settings: TrainSettings,
) -> TrainReport:
    """The report of a run that trained on `used` of `given` pairs since `started`."""
    seconds = time.perf_counter() - started
    return TrainReport(
        steps=len(losses),
        pairs=used,
        dropped_pairs=given - used,
        first_loss=losses[0],
        final_loss=_tail_mean(losses),
        loss_curve=_curve(losses),
        seconds=round(seconds, 3),
        pairs_per_s=round(len(losses) * batch_size / seconds, 2),
        device=device,
        config={"batch_size": batch_size, **settings.model_dump(exclude={"base_model"})},
    )


def run_steps(
    step_fn: Callable[[Sequence[Any]], Tensor],
    batches: Iterator[Sequence[Any]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    steps: int,
    batch_size: int,
    progress: bool,
) -> list[float]:
    """The optimisation loop shared by the text and CLIP trainers; returns the loss per step.

    `progress`: a bar on the terminal; log lines (`tuner.progress`: step/total, pairs/s, ETA)
    are written either way, for a worker's log."""
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=steps, desc="fine-tune", unit="step", disable=not progress)
    with progress_stage("training", "step", steps, rate_unit="pairs", per_unit=batch_size) as done:
        for step, batch in zip(range(steps), batches, strict=False):
            loss = step_fn(batch)
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(1)
            rate = (step + 1) * batch_size / (time.perf_counter() - started)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", pairs_s=f"{rate:.1f}")
            done.advance(loss=f"{losses[-1]:.4f}")
    bar.close()
    return losses


def usable_pairs(pairs: Sequence[TrainingPair], doc_texts: Mapping[str, str]) -> list[TrainingPair]:
    """Pairs whose positive has text, with hard negatives cut to those that have text."""
    used = []
    for pair in pairs:
        if not doc_texts.get(pair.positive_id):
            continue
        negatives = tuple(n for n in pair.hard_negative_ids if doc_texts.get(n))
        used.append(TrainingPair(pair.query, pair.positive_id, pair.weight, negatives))
    return used


def embed(model: SentenceTransformer, texts: Sequence[str], device: str) -> Tensor:
    """Sentence embeddings with gradients, as the model computes them in training."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(list(texts))
    features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]  # (len(texts), D)


def _train_step(
    model: SentenceTransformer,
    loss_fn: WeightedInfoNCELoss,
    batch: Sequence[TrainingPair],
    *,
    doc_texts: Mapping[str, str],
    positives: Mapping[str, set[str]],
    device: str,
) -> Tensor:
    negative_ids = [p.hard_negative_ids[0] for p in batch if p.hard_negative_ids]
    candidate_ids = [p.positive_id for p in batch] + negative_ids
    weights = torch.tensor([p.weight for p in batch], device=device)  # (B,)
    mask = torch.tensor(
        [[c in positives[query_key(p.query)] for c in candidate_ids] for p in batch],
        device=device,
    )  # (B, B + H)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        queries = embed(model, [p.query for p in batch], device)  # (B, D)
        docs = embed(model, [doc_texts[c] for c in candidate_ids], device)  # (B + H, D)
    hard = docs[len(batch) :] if negative_ids else None  # (H, D)
    return loss_fn(queries, docs[: len(batch)], weights, hard, mask)


def shuffled_batches(
    pairs: Sequence[TrainingPair], batch_size: int, seed: int
) -> Iterator[list[TrainingPair]]:
    """Endless shuffled batches, a fresh order each epoch; the last short batch is dropped."""
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    while True:
        rng.shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [pairs[i] for i in order[start : start + batch_size]]


def positives_by_query(pairs: Sequence[TrainingPair]) -> dict[str, set[str]]:
    positives: dict[str, set[str]] = {}
    for pair in pairs:
        positives.setdefault(query_key(pair.query), set()).add(pair.positive_id)
    return positives


def warmup_then_linear_decay(
    optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(steps * warmup_ratio)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (steps - step) / max(1, steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _tail_mean(losses: Sequence[float]) -> float:
    tail = losses[-max(1, len(losses) // 10) :]
    return round(sum(tail) / len(tail), 6)


def _curve(losses: Sequence[float]) -> tuple[float, ...]:
    slices = min(CURVE_POINTS, len(losses))
    size = len(losses) / slices
    chunks = [losses[int(i * size) : int((i + 1) * size)] or [losses[-1]] for i in range(slices)]
    return tuple(round(sum(c) / len(c), 6) for c in chunks)
