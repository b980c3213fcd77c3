"""Splits of a batch: training sessions, the latest sessions (time) and held-out queries (cold).

Validation by time measures what the next days look like; held-out queries measure cold start
(queries the model never trained on). A query is held out by a stable hash of its text, so the
same query stays held out in every batch of a run with the same seed. A split depends only on the
sessions (not their order) and the settings, so a later iteration can split an earlier batch
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

__all__ = ["SelectConfirm", "Splits", "select_confirm", "split_sessions"]


@dataclass(frozen=True)
class Splits:
    """Train on `train`; validate on `latest` (time) and `cold` (held-out queries)."""

    train: list[Session]
    latest: list[Session]
    cold: list[Session]

    @property
    def validation(self) -> list[Session]:
        return [*self.latest, *self.cold]


def split_sessions(sessions: Sequence[Session], settings: BatchSettings) -> Splits:
    """Hold out a fraction of the queries (when there are enough), then the latest sessions."""
    queries = {query_key(s.user_query) for s in sessions}
    cold_keys: set[str] = set()
    if settings.cold_query_fraction > 0 and len(queries) >= settings.min_queries_for_cold_split:
        cold_keys = {q for q in queries if _unit(q, settings.seed) < settings.cold_query_fraction}
    cold = [s for s in sessions if query_key(s.user_query) in cold_keys]
    rest = sorted(
        (s for s in sessions if query_key(s.user_query) not in cold_keys),
        key=lambda s: (s.timestamp.timestamp() if s.timestamp else 0.0, s.query_id),
    )
    n_latest = int(len(rest) * settings.validation_fraction)
    cut = len(rest) - n_latest
    return Splits(train=rest[:cut], latest=rest[cut:], cold=cold)


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
