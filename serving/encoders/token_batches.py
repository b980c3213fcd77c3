"""Model runs cut by padded tokens, not by count, and the padding they waste.

A run costs what its padded tensor holds: rows x the longest row's tokens. Cutting by count lets one
long text make 63 short ones pay its width; cutting by tokens keeps every run near the same cost, so
long and short texts share the cores evenly. `plan_batches` sorts texts by token length and closes a
batch when one more text would take it past `max_tokens` padded tokens (or past `max_texts` rows); a
text longer than the budget runs alone. The micro-batcher (serving/encoders/batcher.py) gathers
requests; the encoder, which knows token lengths, cuts them here.

`TokenTally` counts the real and padded tokens the runs carried, so the waste (padded tokens
that are padding) is a metric: `clicktune_encode_tokens_total{slot,side,kind}`
(serving/api/metrics.py).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["TokenTally", "attach_tally", "plan_batches"]


def plan_batches(lengths: Sequence[int], *, max_tokens: int, max_texts: int) -> list[list[int]]:
    """Indices of `lengths` in model runs: shortest first, each run's rows x longest length
    <= `max_tokens` and rows <= `max_texts`; a text longer than `max_tokens` runs alone.

    Lengths count as at least 1: an empty text still takes a row of width 1.
    """
    if max_tokens < 1 or max_texts < 1:
        raise ValueError(f"max_tokens={max_tokens} and max_texts={max_texts} must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        width = max(1, lengths[i])  # sorted: the newcomer is the batch's longest
        if batch and ((len(batch) + 1) * width > max_tokens or len(batch) == max_texts):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


class TokenTally:
    """Real and padded tokens of the model runs, added from any thread."""

    def __init__(self) -> None:
        self.real = 0
        self.padded = 0
        self._lock = threading.Lock()

    def add(self, real: int, padded: int) -> None:
        with self._lock:
            self.real += real
            self.padded += padded

    @property
    def waste(self) -> float:
        """Share of the padded tokens that were padding (0 when nothing ran)."""
        with self._lock:
            return 1 - self.real / self.padded if self.padded else 0.0


def attach_tally(encoder: Any, tally: TokenTally) -> bool:
    """Make the graph encoder behind `encoder`'s wrappers count into `tally`; False when none
    counts tokens (a hashing fake, a CLIP text tower padded inside its graph)."""
    for _ in range(16):  # wrappers nest a few deep, never in a cycle
        if isinstance(getattr(encoder, "tally", None), TokenTally):
            encoder.tally = tally
            return True
        encoder = getattr(encoder, "inner", None)
    return False
