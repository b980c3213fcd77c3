"""Fine-tune a sentence-transformers model on weighted training pairs (a plain torch loop)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from sentence_transformers import SentenceTransformer
from torch import Tensor
from tqdm.auto import tqdm

from tuner.config import NegativeSource, TrainSettings
from tuner.effective_batch import EffectiveBatches
from tuner.errors import NoTrainingDataError, TrainConfigError
from tuner.grad_cache import cached_loss
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair, query_key
from tuner.progress import stage as progress_stage
from tuner.trainable import trainable_text_model

if TYPE_CHECKING:
    from tuner.distributed import DataParallel

__all__ = [
    "TrainReport",
    "StepInputs",
    "check_trainable",
    "embed",
    "fine_tune",
    "in_batch_mask",
    "positives_by_query",
    "report_of",
    "run_length",
    "run_steps",
    "shuffled_batches",
    "step_inputs",
    "train_step",
    "usable_pairs",
    "warmup_then_linear_decay",
]

log = logging.getLogger(__name__)

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
    parallel: DataParallel | None = None,
) -> TrainReport:
    """Train `model` in place on `pairs` for `max_steps` (or `epochs`) and report how it went.

    `parallel`: this process is one of a data-parallel fine-tune (`tuner.distributed`); each
    process embeds its share of every batch and the step is the whole batch's.
    `TrainConfigError` before any step when the settings cannot train on these pairs."""
    used = usable_pairs(pairs, doc_texts)
    if not used:
        raise NoTrainingDataError(
            f"none of the {len(pairs)} training pairs has a positive document with text "
            f"(is the document index the one the sessions were served from?)"
        )
    check_trainable(used, settings)
    if parallel is not None:
        parallel.check(settings.batch_size)
    torch.manual_seed(settings.seed)
    batch_size, steps = run_length(settings, len(used))
    model.max_seq_length = settings.max_length
    loss_fn = WeightedInfoNCELoss(settings.temperature)
    positives = positives_by_query(used)
    device = str(model.device)
    label = device if parallel is None else f"{parallel.world_size} x {device}"
    started = time.perf_counter()
    model.train()
    with trainable_text_model(model, settings) as params:
        if parallel is not None:
            parallel.start(model, settings.seed)
        optimizer = torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        scheduler = warmup_then_linear_decay(optimizer, steps, settings.warmup_ratio)
        step_fn = partial(
            train_step,
            model,
            loss_fn,
            doc_texts=doc_texts,
            positives=positives,
            device=device,
            mini_batch_size=settings.mini_batch_size,
            parallel=parallel,
        )
        effective = EffectiveBatches()
        batches = effective.track(shuffled_batches(used, batch_size, settings.seed))
        sync = None if parallel is None else partial(parallel.sum_gradients, params)
        losses = run_steps(
            step_fn, batches, optimizer, scheduler, steps, batch_size, progress, sync
        )
    model.eval()
    effective.report(batch_size)
    report = report_of(losses, len(used), len(pairs), started, batch_size, label, settings)
    return replace(report, effective_batch=effective.mean())


def check_trainable(pairs: Sequence[TrainingPair], settings: TrainSettings) -> None:
    """`TrainConfigError` naming the value and the rule when `settings` cannot train `pairs`."""
    if settings.negatives is NegativeSource.ann_mined and not any(
        p.hard_negative_ids for p in pairs
    ):
        raise TrainConfigError(
            f"tuner.train.negatives {settings.negatives.value!r} needs negatives mined from an "
            f"index (tuner.negatives.mine_negatives), but none of the {len(pairs)} pairs has "
            f"one: mine them before training, or choose another negative source"
        )


def run_length(settings: TrainSettings, pairs: int) -> tuple[int, int]:
    """The batch size (at most the `pairs`) and the steps of a run over `pairs` training pairs:
    `max_steps`, else `epochs` passes."""
    batch_size = min(settings.batch_size, pairs)
    if batch_size < settings.batch_size:  # a small round still trains: said, never silent
        log.warning(
            "tuner.train.batch_size %d is larger than the %d usable training pairs: "
            "training in batches of %d (train on more sessions for full batches)",
            settings.batch_size,
            pairs,
            batch_size,
        )
    return batch_size, settings.max_steps or settings.epochs * math.ceil(pairs / batch_size)


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
    sync_gradients: Callable[[], None] | None = None,
) -> list[float]:
    """The optimisation loop shared by the text and CLIP trainers; returns the loss per step.

    `progress`: a bar on the terminal; log lines (`tuner.progress`: step/total, pairs/s, ETA)
    are written either way, for a worker's log. `sync_gradients` runs between backward and
    the optimizer (data-parallel: the gradient sum over processes)."""
    losses: list[float] = []
    started = time.perf_counter()
    bar = tqdm(total=steps, desc="fine-tune", unit="step", disable=not progress)
    with progress_stage("training", "step", steps, rate_unit="pairs", per_unit=batch_size) as done:
        for step, batch in zip(range(steps), batches, strict=False):
            loss = step_fn(batch)
            loss.backward()
            if sync_gradients is not None:
                sync_gradients()
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
        kept = [
            (n, w)
            for n, w in zip(pair.hard_negative_ids, _weights_of(pair), strict=True)
            if doc_texts.get(n)
        ]
        negatives = tuple(n for n, _ in kept)
        weights = tuple(w for _, w in kept) if pair.negative_weights else ()
        used.append(TrainingPair(pair.query, pair.positive_id, pair.weight, negatives, weights))
    return used


def _weights_of(pair: TrainingPair) -> tuple[float, ...]:
    return pair.negative_weights or (1.0,) * len(pair.hard_negative_ids)


def embed(model: SentenceTransformer, texts: Sequence[str], device: str) -> Tensor:
    """Sentence embeddings with gradients, as the model computes them in training."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize
    features = tokenize(list(texts))
    features = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in features.items()}
    return model(features)["sentence_embedding"]  # (len(texts), D)


@dataclass(frozen=True)
class StepInputs:
    """What one step feeds the loss, besides the embeddings: texts, weights, mask."""

    queries: list[str]  # B query texts
    candidates: list[str]  # B positives' texts, then H hard negatives' (each row's first)
    candidate_rows: tuple[int, ...]  # (B + H,) the batch row each candidate comes from
    weights: Tensor  # (B,) pair weights
    mask: Tensor  # (B, B + H) True: not a negative for that row
    negative_weights: Tensor | None  # (H,) how much each hard negative counts; None: 1 each


def step_inputs(
    batch: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    positives: Mapping[str, set[str]],
    device: str,
) -> StepInputs:
    """The loss inputs of `batch`: every pair's positive, then its first hard negative."""
    with_negatives = [p for p in batch if p.hard_negative_ids]
    negative_ids = [p.hard_negative_ids[0] for p in with_negatives]
    candidate_ids = [p.positive_id for p in batch] + negative_ids
    negative_weights = None
    if any(p.negative_weights for p in with_negatives):
        negative_weights = torch.tensor(
            [_weights_of(p)[0] for p in with_negatives], device=device
        )  # (H,)
    return StepInputs(
        queries=[p.query for p in batch],
        candidates=[doc_texts[c] for c in candidate_ids],
        candidate_rows=(
            *range(len(batch)),
            *(i for i, p in enumerate(batch) if p.hard_negative_ids),
        ),
        weights=torch.tensor([p.weight for p in batch], device=device),  # (B,)
        mask=in_batch_mask(batch, candidate_ids, positives).to(device),  # (B, B + H)
        negative_weights=negative_weights,
    )


def in_batch_mask(
    batch: Sequence[TrainingPair], candidate_ids: Sequence[str], positives: Mapping[str, set[str]]
) -> Tensor:
    """(B, len(candidate_ids)) True where a candidate is no negative for a row: a positive of
    the row's query (its own, or another row's of the same query), or a second copy of a
    document already among the candidates (counted once, not once per copy)."""
    repeated = [c in candidate_ids[:j] for j, c in enumerate(candidate_ids)]
    return torch.tensor(
        [
            [
                c in positives[query_key(p.query)] or again
                for c, again in zip(candidate_ids, repeated, strict=True)
            ]
            for p in batch
        ]
    )  # (B, B + H)


def train_step(
    model: SentenceTransformer,
    loss_fn: WeightedInfoNCELoss,
    batch: Sequence[TrainingPair],
    *,
    doc_texts: Mapping[str, str],
    positives: Mapping[str, set[str]],
    device: str,
    mini_batch_size: int | None = None,
    parallel: DataParallel | None = None,
) -> Tensor:
    """The loss of one batch, ready for `.backward()`; with `mini_batch_size`, through the
    gradient cache (`tuner.grad_cache`): same value and gradients, memory of a mini-batch.
    With `parallel`, this process embeds its share of `batch` and the loss is the whole
    batch's (`tuner.distributed`): sum the gradients over processes before stepping."""
    inputs = step_inputs(batch, doc_texts, positives, device)
    loss_of: Callable[[list[Tensor]], Tensor] = partial(_loss_of, loss_fn, inputs)
    groups = [inputs.queries, inputs.candidates]  # (B,), (B + H,) texts
    if parallel is not None:
        owners = [range(len(batch)), inputs.candidate_rows]
        groups, loss_of = parallel.split_step(len(batch), owners, groups, loss_of)
    if mini_batch_size is not None:
        encode = partial(_embed_autocast, model, device=device)
        return cached_loss(encode, groups, loss_of, mini_batch_size)
    return loss_of([_embed_autocast(model, g, device) for g in groups])  # (B, D), (B + H, D)


def _loss_of(loss_fn: WeightedInfoNCELoss, inputs: StepInputs, reps: list[Tensor]) -> Tensor:
    queries, docs = reps  # (B, D), (B + H, D)
    batch = len(inputs.queries)
    hard = docs[batch:] if docs.shape[0] > batch else None  # (H, D)
    return loss_fn(
        queries, docs[:batch], inputs.weights, hard, inputs.mask, inputs.negative_weights
    )


def _embed_autocast(model: SentenceTransformer, texts: Sequence[str], device: str) -> Tensor:
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        return embed(model, texts, device)


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
