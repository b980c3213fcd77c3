"""Earlier batches, as an iteration sees them: sessions to replay and sessions still held out.

Each earlier batch is split again exactly as when it was trained (by the held-out queries
recorded for it, `Batches.holdout`; a batch trained before they were recorded is split by the
query hash alone, as it was then), so

- replay draws only from sessions that were trained on before: a cold query or a validation
  session of batch 1 never leaks into the training of batch 2;
- the held-out sessions of earlier batches join the current batch's validation. The gate then
  compares the candidate and the live model on more queries every round, so a better candidate
  is less often rejected by the noise of one small batch (and a worse one less often let in).

Only the newest `history_batches` batches are read, and the validation keeps the newest
`max_validation_sessions` sessions, so an iteration's cost stays bounded as batches pile up.

`round_sessions` puts a round together: the current batch split with its own held-out queries
(rotated per batch, recorded before anything trains), the replay drawn from earlier training
sessions minus those of the queries this batch holds out (a query trained in batch 1 and held
out in batch 2 is not replayed into batch 2), and the validation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.batches import Batch, Batches, ReleasedBatch, SessionSource
from tuner.config import BatchSettings
from tuner.pairs import query_key
from tuner.sessions import Session
from tuner.splits import Splits, split_sessions

__all__ = ["History", "Round", "history", "round_sessions", "sample"]


@dataclass(frozen=True)
class History:
    """Sessions of the batches released before the current one, newest batch first."""

    train: list[Session]
    validation: list[Session]


def history(
    store: Batches, source: SessionSource, current: Batch, settings: BatchSettings
) -> History:
    """The train and held-out sessions of the newest `settings.history_batches` earlier batches."""
    earlier = [b for b in store.list() if b.batch_id < current.batch_id]
    train: list[Session] = []
    validation: list[Session] = []
    for batch in reversed(earlier[len(earlier) - settings.history_batches :]):
        sessions = source.sessions_by_id(list(batch.session_ids))
        recorded = store.holdout(batch.batch_id)
        splits = split_sessions(sessions, settings, cold_queries=recorded)
        train.extend(splits.train)
        validation.extend(splits.validation)
    return History(train, validation)


def sample(sessions: Sequence[Session], count: int, seed: int = 0) -> list[Session]:
    """A reproducible random sample of `count` sessions (all of them when there are fewer)."""
    if count <= 0 or not sessions:
        return []
    return random.Random(seed).sample(list(sessions), min(count, len(sessions)))


@dataclass(frozen=True)
class Round:
    """The sessions of one iteration: this batch's split, the replayed ones, the validation."""

    splits: Splits
    replayed: list[Session]
    validation: list[Session]


def round_sessions(
    store: Batches, source: SessionSource, released: ReleasedBatch, settings: BatchSettings
) -> Round:
    """Split `released` by its held-out queries (recorded now unless a run of it already did),
    replay earlier training sessions of the other queries, validate on both batches' held-out
    sessions (this one's first, at most `max_validation_sessions`)."""
    batch_id = released.batch.batch_id
    earlier = history(store, source, released.batch, settings)
    splits = split_sessions(released.sessions, settings, batch_id, store.holdout(batch_id))
    store.save_holdout(batch_id, splits.cold_queries)
    replayable = [s for s in earlier.train if query_key(s.user_query) not in splits.cold_queries]
    count = round(settings.replay_ratio * len(released.sessions))
    replayed = sample(replayable, count, settings.seed)
    validation = [*splits.validation, *earlier.validation][: settings.max_validation_sessions]
    return Round(splits, replayed, validation)
