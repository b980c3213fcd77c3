"""Embed queries and documents each with their own side of a model.

A text or CLIP model embeds both with one function (`Embed`). A query model ("query model X over
document model Y") does not: queries go through its adapter, documents through Y's frozen
encoder, as the index holds them. `TwoSided` carries both; called as an `Embed` it embeds
documents, and everything that embeds queries asks `query_side(embed)` for the function to use,
which is `embed` itself for a one-sided model. So scoring code stays one path for every kind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner import progress

__all__ = ["Embed", "TwoSided", "query_side", "sliced"]

Embed = Callable[[Sequence[Any]], np.ndarray]  # texts (or images) -> (n, dim) L2-normalised


@dataclass(frozen=True)
class TwoSided:
    """An asymmetric model's embedding: `query` for queries, `document` for documents."""

    query: Embed
    document: Embed

    def __call__(self, items: Sequence[Any]) -> np.ndarray:
        return self.document(items)  # (n, dim)


def query_side(embed: Embed) -> Embed:
    """What embeds queries: a `TwoSided`'s query side, else `embed` (a symmetric model)."""
    return embed.query if isinstance(embed, TwoSided) else embed


def sliced(embed: Embed, done: progress.StageProgress) -> Embed:
    """`embed` reporting progress per slice (`progress.in_slices`), both sides of a `TwoSided`."""
    if isinstance(embed, TwoSided):
        return TwoSided(sliced(embed.query, done), sliced(embed.document, done))
    return progress.in_slices(embed, done, np.concatenate)
