"""Outcome-weighted InfoNCE with in-batch and hard negatives (the GCL idea)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WeightedInfoNCELoss"]


class WeightedInfoNCELoss(nn.Module):
    """Outcome-weighted InfoNCE: pull each query towards its positive, away from all others.

    For a batch of B pairs with query embeddings q_i, positive embeddings p_i, weights w_i and
    H hard negatives n_1..n_H shared by the batch, the candidates are c = [p_1..p_B; n_1..n_H]
    and

        s_ij   = cos(q_i, c_j) / temperature
        l_i    = -log( exp(s_ii) / sum_j exp(s_ij) )        (cross-entropy, target j = i)
        loss   = sum_i w_i * l_i / sum_i w_i

    so a purchase at rank 5 moves the model more than a click at rank 0. `mask` (B, B + H),
    True where a candidate must not count as a negative for a row (a document that is also a
    positive for that query, or a second copy of a document in the batch), drops those logits;
    the diagonal is never masked. `negative_weights` (H,), a weight e_h in (0, 1] per hard
    negative (its examination probability), counts that negative's exp(s_ih) e_h times in the
    denominator: its logit becomes s_ih + log e_h.

    Reference: van den Oord et al., "Representation Learning with Contrastive Predictive
    Coding" (2018); Marqo, "Generalized Contrastive Learning for Multi-Modal Retrieval and
    Ranking" (2024) for outcome weights.
    """

    def __init__(self, temperature: float = 0.05) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature {temperature} must be > 0")
        self.temperature = temperature

    def forward(
        self,
        queries: Tensor,
        positives: Tensor,
        weights: Tensor,
        hard_negatives: Tensor | None = None,
        mask: Tensor | None = None,
        negative_weights: Tensor | None = None,
    ) -> Tensor:
        batch = queries.shape[0]
        candidates = positives if hard_negatives is None else torch.cat([positives, hard_negatives])
        # (B + H, D)
        scores = F.normalize(queries, dim=-1) @ F.normalize(candidates, dim=-1).T
        scores = scores / self.temperature  # (B, B + H)
        if hard_negatives is not None and negative_weights is not None:
            log_weights = negative_weights.to(scores).clamp_min(1e-6).log()  # (H,)
            scores = torch.cat([scores[:, :batch], scores[:, batch:] + log_weights], dim=1)
        if mask is not None:
            keep_diagonal = torch.eye(batch, scores.shape[1], dtype=torch.bool, device=mask.device)
            scores = scores.masked_fill(mask & ~keep_diagonal, float("-inf"))  # (B, B + H)
        targets = torch.arange(batch, device=scores.device)  # (B,)
        per_row = F.cross_entropy(scores.float(), targets, reduction="none")  # (B,)
        weights = weights.to(per_row)  # (B,)
        return (weights * per_row).sum() / weights.sum()

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
