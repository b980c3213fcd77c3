"""Earlier batches, as an iteration sees them: sessions to replay and sessions still held out.

Each earlier batch is split again exactly as when it was trained (a split is a pure function of
a batch's sessions and the batch settings, see `tuner.splits`), so

- replay draws only from sessions that were trained on before: a cold query or a validation
  session of batch 1 never leaks into the training of batch 2;
- the held-out sessions of earlier batches join the current batch's validation. The gate then
  compares the candidate and the live model on more queries every round, so a better candidate
  is less often rejected by the noise of one small batch (and a worse one less often let in).

Only the newest `history_batches` batches are read, and the validation keeps the newest
`max_validation_sessions` sessions, so an iteration's cost stays bounded as batches pile up.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.batches import Batch, BatchStore, SessionSource
from tuner.config import BatchSettings
from tuner.sessions import Session
from tuner.splits import split_sessions

__all__ = ["History", "history", "sample"]


@dataclass(frozen=True)
class History:
    """Sessions of the batches released before the current one, newest batch first."""

    train: list[Session]
    validation: list[Session]


def history(
    store: BatchStore, source: SessionSource, current: Batch, settings: BatchSettings
) -> History:
    """The train and held-out sessions of the newest `settings.history_batches` earlier batches."""
    earlier = [b for b in store.list() if b.batch_id < current.batch_id]
    train: list[Session] = []
    validation: list[Session] = []
    for batch in reversed(earlier[len(earlier) - settings.history_batches :]):
        splits = split_sessions(source.sessions_by_id(list(batch.session_ids)), settings)
        train.extend(splits.train)
        validation.extend(splits.validation)
    return History(train, validation)


def sample(sessions: Sequence[Session], count: int, seed: int = 0) -> list[Session]:
    """A reproducible random sample of `count` sessions (all of them when there are fewer)."""
    if count <= 0 or not sessions:
        return []
    return random.Random(seed).sample(list(sessions), min(count, len(sessions)))
