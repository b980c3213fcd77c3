"""Fine-tune an open_clip model on weighted (query text, clicked image) pairs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor

from tuner.clip import ClipModel
from tuner.config import TrainSettings
from tuner.errors import NoTrainingDataError
from tuner.losses.clip_symmetric import WeightedSymmetricClipLoss
from tuner.pairs import TrainingPair, query_key
from tuner.train import (
    TrainReport,
    positives_by_query,
    report_of,
    run_length,
    run_steps,
    shuffled_batches,
    warmup_then_linear_decay,
)
from tuner.trainable import trainable_clip_model

__all__ = ["fine_tune_clip", "usable_image_pairs"]


def fine_tune_clip(
    clip: ClipModel,
    pairs: Sequence[TrainingPair],
    doc_images: Mapping[str, Any],
    settings: TrainSettings,
    progress: bool = True,
) -> TrainReport:
    """Train `clip.model` in place on `pairs` (documents are PIL images) and report how it went.

    Both towers and CLIP's logit scale learn (unless LoRA or frozen layers restrict them);
    `settings.temperature` is not used: CLIP keeps its own learned scale.
    """
    used = usable_image_pairs(pairs, doc_images)
    if not used:
        raise NoTrainingDataError(
            f"none of the {len(pairs)} training pairs has a positive document with an image"
        )
    torch.manual_seed(settings.seed)
    batch_size, steps = run_length(settings, len(used))
    pixels = _PixelCache(clip, doc_images)
    step_fn = partial(
        _train_step,
        clip,
        WeightedSymmetricClipLoss(),
        pixels=pixels,
        positives=positives_by_query(used),
    )
    started = time.perf_counter()
    clip.model.train()
    with trainable_clip_model(clip.model, settings) as params:
        optimizer = torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        scheduler = warmup_then_linear_decay(optimizer, steps, settings.warmup_ratio)
        batches = shuffled_batches(used, batch_size, settings.seed)
        losses = run_steps(step_fn, batches, optimizer, scheduler, steps, batch_size, progress)
    clip.model.eval()
    return report_of(losses, len(used), len(pairs), started, batch_size, clip.device, settings)


def usable_image_pairs(
    pairs: Sequence[TrainingPair], doc_images: Mapping[str, Any]
) -> list[TrainingPair]:
    """Pairs whose positive has an image, with hard negatives cut to those that have one."""
    used = []
    for pair in pairs:
        if doc_images.get(pair.positive_id) is None:
            continue
        negatives = tuple(n for n in pair.hard_negative_ids if doc_images.get(n) is not None)
        used.append(TrainingPair(pair.query, pair.positive_id, pair.weight, negatives))
    return used


class _PixelCache:
    """Each document image preprocessed once (eval transform), kept as a (3, H, W) tensor."""

    def __init__(self, clip: ClipModel, doc_images: Mapping[str, Any]) -> None:
        self._clip = clip
        self._images = doc_images
        self._cache: dict[str, Tensor] = {}

    def __call__(self, ids: Sequence[str]) -> Tensor:
        for doc_id in ids:
            if doc_id not in self._cache:
                self._cache[doc_id] = self._clip.preprocess(self._images[doc_id])
        return torch.stack([self._cache[i] for i in ids]).to(self._clip.device)  # (N, 3, H, W)


def _train_step(
    clip: ClipModel,
    loss_fn: WeightedSymmetricClipLoss,
    batch: Sequence[TrainingPair],
    *,
    pixels: _PixelCache,
    positives: Mapping[str, set[str]],
) -> Tensor:
    device = clip.device
    negative_ids = [p.hard_negative_ids[0] for p in batch if p.hard_negative_ids]
    candidate_ids = [p.positive_id for p in batch] + negative_ids
    weights = torch.tensor([p.weight for p in batch], device=device)  # (B,)
    mask = torch.tensor(
        [[c in positives[query_key(p.query)] for c in candidate_ids] for p in batch],
        device=device,
    )  # (B, B + H)
    tokens = clip.tokenizer([p.query for p in batch]).to(device)  # (B, context_length)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
        texts = clip.model.encode_text(tokens)  # (B, D)
        images = clip.model.encode_image(pixels(candidate_ids))  # (B + H, D)
    hard = images[len(batch) :] if negative_ids else None  # (H, D)
    return loss_fn(texts, images[: len(batch)], weights, clip.model.logit_scale, hard, mask)
