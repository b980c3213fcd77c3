"""Splits of a batch: training sessions, the latest sessions (time) and held-out queries (cold).

Validation by time measures what the next days look like; held-out queries measure cold start
(queries this round does not train on). A query is held out by a stable hash of its text salted
with the batch id (`rotate_cold_queries`), so each batch holds out a different
`cold_query_fraction` of its queries and every query is trained on in most batches; without a
batch id (or with rotation off) the hash is of the text alone and the same queries stay held out
in every batch. A batch's held-out queries are recorded beside it (`Batches.save_holdout`),
and a split given them (`cold_queries`) follows the record. A split depends only on the sessions
(not their order), the settings and the batch id, so a later iteration can split an earlier batch
again and get the same sets (`tuner.history`).

The validation queries are split once more, for deciding (`select_confirm`): the hyperparameter
search picks its winner on the select part and the gate bounds it on the confirm part
(`tuner.gate`). The hash is salted apart from the cold split's, so the two do not line up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tuner.config import BatchSettings
from tuner.pairs import query_key
from tuner.sessions import Session

__all__ = ["SelectConfirm", "Splits", "held_out_queries", "select_confirm", "split_sessions"]


@dataclass(frozen=True)
class Splits:
    """Train on `train`; validate on `latest` (time) and `cold` (held-out queries)."""

    train: list[Session]
    latest: list[Session]
    cold: list[Session]
    cold_queries: frozenset[str] = frozenset()  # the held-out query keys

    @property
    def validation(self) -> list[Session]:
        return [*self.latest, *self.cold]


def split_sessions(
    sessions: Sequence[Session],
    settings: BatchSettings,
    batch_id: str | None = None,
    cold_queries: frozenset[str] | None = None,
) -> Splits:
    """Hold out a fraction of the queries (when there are enough), then the latest sessions.

    `batch_id`: the batch the sessions are, which salts the hold-out (see the module doc);
    `cold_queries`: the query keys to hold out instead, as recorded for the batch."""
    cold_keys = cold_queries
    if cold_keys is None:
        cold_keys = held_out_queries(
            {query_key(s.user_query) for s in sessions}, settings, batch_id
        )
    cold = [s for s in sessions if query_key(s.user_query) in cold_keys]
    rest = sorted(
        (s for s in sessions if query_key(s.user_query) not in cold_keys),
        key=lambda s: (s.timestamp.timestamp() if s.timestamp else 0.0, s.query_id),
    )
    n_latest = int(len(rest) * settings.validation_fraction)
    cut = len(rest) - n_latest
    return Splits(train=rest[:cut], latest=rest[cut:], cold=cold, cold_queries=cold_keys)


def held_out_queries(
    keys: Iterable[str], settings: BatchSettings, batch_id: str | None = None
) -> frozenset[str]:
    """The `cold_query_fraction` of query `keys` (in expectation) that batch `batch_id` holds
    out; none with fewer than `min_queries_for_cold_split` keys."""
    unique = frozenset(keys)
    if settings.cold_query_fraction <= 0 or len(unique) < settings.min_queries_for_cold_split:
        return frozenset()
    salt = f"cold:{batch_id}:" if batch_id is not None and settings.rotate_cold_queries else ""
    return frozenset(
        k for k in unique if _unit(f"{salt}{k}", settings.seed) < settings.cold_query_fraction
    )


@dataclass(frozen=True)
class SelectConfirm:
    """Validation query keys: the search selects on `select`, the gate decides on `confirm`."""

    select: frozenset[str]
    confirm: frozenset[str]


def select_confirm(keys: Iterable[str], fraction: float, seed: int, sets: int) -> SelectConfirm:
    """Split query `keys` by a stable hash, `fraction` of them (in expectation) to select; with
    one hyperparameter set (`sets` == 1) there is nothing to select and all of them confirm."""
    unique = frozenset(keys)
    if sets <= 1:
        return SelectConfirm(frozenset(), unique)
    select = frozenset(k for k in unique if _unit(f"select:{k}", seed) < fraction)
    return SelectConfirm(select, unique - select)


def _unit(key: str, seed: int) -> float:
    """A stable number in [0, 1) for a query key."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
