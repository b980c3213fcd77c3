"""Training pairs: (query, clicked document, weight, skipped documents) from sessions.

Per session, every hit with an outcome is a positive. Its weight is the largest outcome weight
of the actions on it (click 1, add_to_cart 3, purchase 5 by default) times the clipped inverse
examination propensity at the rank it was shown, so deep clicks count more. Hard negatives
depend on `train.negatives` (`NegativeSource`), never a document that is a positive for the
same query in any of the sessions given:

- skip_above (the default): the hits shown above the positive that got no outcome, nearest
  first;
- skip_above_examined: the same, each with its examination probability p(rank) as its weight
  in the loss (the loss counts exp(s) of a negative p times): a skip the user probably never
  looked at is weak evidence against the document, and under the position-based model the
  nearest skip above a deep click is the least likely to have been seen;
- top_skipped: the session's highest-ranked hit without an outcome (the most examined skip);
- none, ann_mined: none here (ann_mined negatives come from the live index: `tuner.negatives`).

The rank is the hit's position in the query's shown list (`Session.rank_of`), as for the
examination curve and the gate; the event's `position.ordinal` is only cross-checked
(`tuner.ordinals`). An outcome on a hit the list does not hold gives no pair: its rank, and so
its bias, is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tuner.config import NegativeSource
from tuner.propensity import Propensity, clipped_inverse_propensity
from tuner.sessions import Session

__all__ = [
    "PairStats",
    "TrainingPair",
    "build_pairs",
    "outcome_weight_by_hit",
    "positives_by_query_key",
    "query_key",
    "session_negatives",
    "skip_above",
    "top_skipped",
    "usable_sessions",
]


@dataclass(frozen=True)
class TrainingPair:
    """A query, a document that satisfied it, how much that counts, and documents it beat."""

    query: str
    positive_id: str
    weight: float
    hard_negative_ids: tuple[str, ...] = ()
    # per hard negative, how much it counts in the loss (its examination probability with
    # negatives skip_above_examined); empty: each counts fully
    negative_weights: tuple[float, ...] = ()


@dataclass
class PairStats:
    """Why sessions were used or skipped: a user sees these numbers after `clicktune train`."""

    sessions: int = 0
    without_hits: int = 0
    bot_like: int = 0
    without_outcome: int = 0
    pairs: int = 0


def query_key(text: str) -> str:
    """The identity of a query for the never-a-positive rule: case and spacing do not matter."""
    return " ".join(text.casefold().split())


def build_pairs(
    sessions: Sequence[Session],
    outcome_weights: Mapping[str, float],
    propensity: Propensity,
    max_ipw: float,
    max_clicks_per_session: int | None = None,
    stats: PairStats | None = None,
    negatives: NegativeSource = NegativeSource.skip_above,
) -> list[TrainingPair]:
    """Training pairs from `sessions`, one per (session, positive hit), in session order.

    Actions whose name is not in `outcome_weights` are ignored. Sessions with no hits, and
    sessions with more than `max_clicks_per_session` outcome actions (bots), give no pairs.
    """
    stats = stats if stats is not None else PairStats()
    usable = usable_sessions(sessions, outcome_weights, max_clicks_per_session, stats)
    positives = positives_by_query_key(usable, outcome_weights)
    pairs: list[TrainingPair] = []
    for session in usable:
        query_positives = positives[query_key(session.user_query)]
        session_pairs = _session_pairs(
            session, outcome_weights, propensity, max_ipw, query_positives, negatives
        )
        if not session_pairs:
            stats.without_outcome += 1
        pairs.extend(session_pairs)
    stats.pairs = len(pairs)
    return pairs


def usable_sessions(
    sessions: Sequence[Session],
    outcome_weights: Mapping[str, float],
    max_clicks: int | None,
    stats: PairStats,
) -> list[Session]:
    """`sessions` less those without hits and the bot-like ones, counted in `stats`."""
    return [s for s in sessions if _usable(s, outcome_weights, max_clicks, stats)]


def _usable(
    session: Session,
    outcome_weights: Mapping[str, float],
    max_clicks: int | None,
    stats: PairStats,
) -> bool:
    stats.sessions += 1
    if not session.hit_ids:
        stats.without_hits += 1
        return False
    outcomes = sum(1 for a in session.actions if a.action_name in outcome_weights)
    if max_clicks is not None and outcomes > max_clicks:
        stats.bot_like += 1
        return False
    return True


def positives_by_query_key(
    sessions: Iterable[Session], outcome_weights: Mapping[str, float]
) -> dict[str, set[str]]:
    """The documents with an outcome in any of `sessions`, per query key."""
    positives: dict[str, set[str]] = {}
    for session in sessions:
        ids = positives.setdefault(query_key(session.user_query), set())
        ids.update(outcome_weight_by_hit(session, outcome_weights))
    return positives


def outcome_weight_by_hit(
    session: Session, outcome_weights: Mapping[str, float]
) -> dict[str, float]:
    """Largest positive outcome weight per acted-on object of the session."""
    best: dict[str, float] = {}
    for action in session.actions:
        weight = outcome_weights.get(action.action_name)
        if weight is not None and weight > 0:
            best[action.object_id] = max(best.get(action.object_id, 0.0), weight)
    return best


def _session_pairs(
    session: Session,
    outcome_weights: Mapping[str, float],
    propensity: Propensity,
    max_ipw: float,
    query_positives: set[str],
    source: NegativeSource,
) -> list[TrainingPair]:
    pairs = []
    for object_id, outcome in outcome_weight_by_hit(session, outcome_weights).items():
        rank = session.rank_of(object_id)
        if rank is None:  # not in the shown list: the bias cannot be corrected
            continue
        ids, examined = session_negatives(session, rank, query_positives, source, propensity)
        weight = outcome * clipped_inverse_propensity(propensity, rank, max_ipw)
        pairs.append(TrainingPair(session.user_query, object_id, weight, ids, examined))
    return pairs


def session_negatives(
    session: Session,
    rank: int,
    query_positives: set[str],
    source: NegativeSource,
    propensity: Propensity,
) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The hard negatives `source` picks from `session` for its positive at `rank`, and their
    loss weights (empty: each counts fully)."""
    source = NegativeSource(source)  # a plain string from an unvalidated model_copy too
    if source is NegativeSource.skip_above:
        return skip_above(session, rank, query_positives), ()
    if source is NegativeSource.skip_above_examined:
        ids = skip_above(session, rank, query_positives)
        return ids, tuple(propensity(session.rank_of(i) or 0) for i in ids)
    if source is NegativeSource.top_skipped:
        return top_skipped(session, query_positives), ()
    return (), ()  # none; ann_mined is mined from the index after the pairs are built


def skip_above(session: Session, rank: int, query_positives: set[str]) -> tuple[str, ...]:
    """The hits shown above `rank` that are no positive for the query, nearest first."""
    return tuple(h for h in reversed(session.hit_ids[:rank]) if h not in query_positives)


def top_skipped(session: Session, query_positives: set[str]) -> tuple[str, ...]:
    """The session's highest-ranked hit that is no positive for the query (or nothing)."""
    return next(((h,) for h in session.hit_ids if h not in query_positives), ())
