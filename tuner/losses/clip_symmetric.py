"""Symmetric CLIP loss, outcome-weighted per pair, with optional hard-negative images."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WeightedSymmetricClipLoss"]


class WeightedSymmetricClipLoss(nn.Module):
    """CLIP's loss in both directions, each pair weighted by its outcome.

    For B (query text, image) pairs with unit embeddings t_i, v_i, weights w_i, H hard-negative
    images n_1..n_H and the logit scale s (CLIP's learned exp(logit_scale), capped at 100):

        text -> image   a_ij = s * t_i . [v; n]_j     l_i^t = CE(a_i, target i)   (B + H columns)
        image -> text   b_ij = s * v_i . t_j          l_i^v = CE(b_i, target i)   (B columns)
        loss = sum_i w_i * (l_i^t + l_i^v) / 2 / sum_i w_i

    `mask` (B, B + H), True where candidate j is also a positive of query i (the same image
    clicked for two queries in the batch), removes those logits from the text -> image rows and,
    transposed, from the image -> text rows; the diagonal always stays.

    Reference: Radford et al., "Learning Transferable Visual Models From Natural Language
    Supervision" (2021); Marqo, "Generalized Contrastive Learning" (2024) for outcome weights.
    """

    def __init__(self, max_scale: float = 100.0) -> None:
        super().__init__()
        if max_scale <= 0:
            raise ValueError(f"max_scale {max_scale} must be > 0")
        self.max_scale = max_scale

    def forward(
        self,
        texts: Tensor,
        images: Tensor,
        weights: Tensor,
        logit_scale: Tensor,
        hard_negatives: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        batch = texts.shape[0]
        scale = logit_scale.exp().clamp(max=self.max_scale)
        texts = F.normalize(texts.float(), dim=-1)  # (B, D)
        candidates = images if hard_negatives is None else torch.cat([images, hard_negatives])
        candidates = F.normalize(candidates.float(), dim=-1)  # (B + H, D)
        text_to_image = scale * texts @ candidates.T  # (B, B + H)
        image_to_text = scale * candidates[:batch] @ texts.T  # (B, B)
        if mask is not None:
            drop = mask & ~torch.eye(batch, mask.shape[1], dtype=torch.bool, device=mask.device)
            text_to_image = text_to_image.masked_fill(drop, float("-inf"))
            image_to_text = image_to_text.masked_fill(drop[:, :batch].T, float("-inf"))
        targets = torch.arange(batch, device=texts.device)  # (B,)
        per_pair = (
            F.cross_entropy(text_to_image, targets, reduction="none")
            + F.cross_entropy(image_to_text, targets, reduction="none")
        ) / 2  # (B,)
        weights = weights.to(per_pair)  # (B,)
        return (weights * per_pair).sum() / weights.sum()

    def get_config_dict(self) -> dict[str, Any]:
        return {"max_scale": self.max_scale}
