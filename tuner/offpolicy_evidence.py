"""The click evidence of a logged search log, per query and document, for the off-policy estimate.

Use: `searches = logged_searches(sessions, weights)`, then `collect_evidence(searches, propensity,
policy, live_pages)`: per query key, the summed outcome weights C, realised examination X and
expected examination E under the logging policy (`LoggingPolicy`), per fold. `tuner.offpolicy`
turns them into gamma_hat; its module docstring states the formula for e_s(d), C, X and E, the
folds, and the assumptions checked here (one explored depth per log, depth >= k, a live ranking
deterministic per query).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tuner.pairs import query_key
from tuner.propensity import Propensity
from tuner.sessions import Session

__all__ = [
    "LoggedSearch",
    "LoggingPolicy",
    "QueryEvidence",
    "collect_evidence",
    "logged_searches",
]

FOLDS = 2  # cross-fitting folds (tuner.offpolicy module doc)


@dataclass(frozen=True)
class LoggedSearch:
    """One logged search: its query key, the hits shown in order, the outcome weight of each
    hit acted on, and the shuffled depth if it was randomised (None: the plain live order)."""

    query: str
    shown: tuple[str, ...]
    outcomes: Mapping[str, float]
    depth: int | None = None


@dataclass(frozen=True)
class QueryEvidence:
    """Per fold (rows) and per document the logging policy could show for the query (columns:
    those shown, and with a policy the live top depth): summed outcome weights C, realised
    examination X and expected examination E under the logging policy."""

    docs: tuple[str, ...]
    clicks: np.ndarray  # (FOLDS, n_docs)
    examined: np.ndarray  # (FOLDS, n_docs)
    expected: np.ndarray  # (FOLDS, n_docs)
    searches: int
    live_ranks: np.ndarray  # (n_docs,) rank in the live ranking, -1 where unknown


@dataclass(frozen=True)
class LoggingPolicy:
    """How the log was written (`serving.randomization`): the share of searches that were
    shuffled and the live top depth they shuffled."""

    fraction: float
    depth: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"randomised fraction {self.fraction} must lie in [0, 1]")
        if self.depth < 1:
            raise ValueError(f"explored depth {self.depth} must be >= 1")


def logged_searches(
    sessions: Sequence[Session], outcome_weights: Mapping[str, float]
) -> list[LoggedSearch]:
    """The sessions that showed hits as `LoggedSearch`es; a hit's outcome is the largest weight
    of its actions (as in tuner.session_eval); actions on documents not shown are ignored."""
    searches = []
    for session in sessions:
        if not session.hit_ids:
            continue
        if session.randomized and session.explored_depth is None:
            raise ValueError(
                f"session {session.query_id!r} is randomised but its explored depth is unknown: "
                "the estimator needs the shuffled depth (query_attributes.randomized = "
                "'shuffle_top_<depth>') to know how likely each document was shown"
            )
        outcomes: dict[str, float] = {}
        for action in session.actions:
            weight = outcome_weights.get(action.action_name, 0.0)
            if weight > 0 and action.object_id in session.hit_ids:
                outcomes[action.object_id] = max(outcomes.get(action.object_id, 0.0), weight)
        depth = session.explored_depth if session.randomized else None
        searches.append(
            LoggedSearch(query_key(session.user_query), session.hit_ids, outcomes, depth)
        )
    return searches


def collect_evidence(
    searches: Sequence[LoggedSearch],
    propensity: Propensity,
    policy: LoggingPolicy | None,
    live_pages: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, QueryEvidence]:
    """Per query key, the click evidence of its searches (C, X, E: tuner.offpolicy module doc).
    `policy`: the logging mixture (None: each search's own policy, the realised mixture);
    `live_pages`: the live model's ranking per query, needed with a policy for queries no plain
    search shows."""
    if not searches:
        raise ValueError("no logged searches: the off-policy estimate needs at least one search")
    by_query: dict[str, list[LoggedSearch]] = {}
    for search in searches:
        by_query.setdefault(search.query, []).append(search)
    examination = _examination(propensity, max(len(s.shown) for s in searches))
    evidence = {}
    for query, group in by_query.items():
        _check_depths(query, group, policy)
        page = _live_page(query, group, live_pages) if policy is not None else ()
        evidence[query] = _query_evidence(group, examination, policy, page)
    return evidence


def _examination(propensity: Propensity, ranks: int) -> np.ndarray:
    """p(0..ranks-1), each checked to lie in (0, 1]."""
    values = np.array([propensity(j) for j in range(ranks)], dtype=float)
    for j, p in enumerate(values):
        if not 0.0 < p <= 1.0:
            raise ValueError(
                f"propensity p({j}) = {p} must lie in (0, 1]: a rank that is shown but never "
                "examined carries no click evidence, so no inverse propensity exists for it"
            )
    return values


def _query_evidence(
    searches: Sequence[LoggedSearch],
    examination: np.ndarray,
    policy: LoggingPolicy | None,
    page: Sequence[str],
) -> QueryEvidence:
    explored = page[: policy.depth] if policy is not None else ()
    docs = tuple(dict.fromkeys([*(d for s in searches for d in s.shown), *explored]))
    column = {d: i for i, d in enumerate(docs)}
    live_rank = {d: r for r, d in enumerate(explored)}
    clicks, examined, expected = (np.zeros((FOLDS, len(docs))) for _ in range(3))
    kinds: Counter[tuple[int, int, int | None]] = Counter()  # (fold, k, depth) -> searches
    for i, search in enumerate(searches):
        fold, hits = i % FOLDS, list(dict.fromkeys(search.shown))
        at = [column[d] for d in hits]
        examined[fold, at] += examination[: len(at)]
        clicks[fold, at] += [search.outcomes.get(d, 0.0) for d in hits]
        if policy is None and search.depth is None:  # realised mixture: its own plain page
            expected[fold, at] += examination[: len(at)]
        else:
            kinds[fold, len(search.shown), search.depth] += 1
    for (fold, k, depth), count in kinds.items():
        if policy is not None:
            expected[fold] += count * _mixture_exposure(k, page, column, examination, policy)
        elif depth is not None:  # a shuffle, weighted by its own policy
            expected[fold] += count * examination[:k].sum() / depth
    ranks = np.array([live_rank.get(d, -1) for d in docs], dtype=int)
    return QueryEvidence(docs, clicks, examined, expected, len(searches), ranks)


def _mixture_exposure(
    k: int,
    page: Sequence[str],
    column: Mapping[str, int],
    examination: np.ndarray,
    policy: LoggingPolicy,
) -> np.ndarray:
    """e_s(d) of a search showing k hits, for every d in `column` (tuner.offpolicy module doc);
    every document shown for the query is taken to be in the live top depth (assumptions)."""
    plain = _exposure(page[:k], column, examination)
    shuffled = examination[:k].sum() / policy.depth
    return (1.0 - policy.fraction) * plain + policy.fraction * shuffled


def _exposure(
    hits: Sequence[str], column: Mapping[str, int], examination: np.ndarray
) -> np.ndarray:
    """p(rank) at the column of each hit (hits outside `column` are left out)."""
    ranked = [(r, column[d]) for r, d in enumerate(dict.fromkeys(hits)) if d in column]
    exposure = np.zeros(len(column))
    if ranked:
        ranks, columns = zip(*ranked, strict=True)
        exposure[list(columns)] = examination[list(ranks)]
    return exposure


def _check_depths(
    query: str, searches: Sequence[LoggedSearch], policy: LoggingPolicy | None
) -> None:
    depths = sorted({s.depth for s in searches if s.depth is not None})
    if policy is None and len(depths) > 1:
        raise ValueError(
            f"query {query!r} was randomised at depths {depths}: the estimator needs one "
            "explored depth per query to know which documents each shuffle could show"
        )
    for search in searches:
        _check_fraction(query, search, policy)
        depth = policy.depth if policy is not None else search.depth
        if search.depth is not None and depth != search.depth:
            raise ValueError(
                f"query {query!r} was randomised at depth {search.depth} but the logging "
                f"policy's depth is {depth}: pass the policy the log was written with"
            )
        if depth is not None and depth < len(search.shown):
            raise ValueError(
                f"query {query!r}: explored depth {depth} < {len(search.shown)} hits shown: a "
                "randomised search shuffles the live top depth and shows the first k, so the "
                "depth must be >= k"
            )


def _check_fraction(query: str, search: LoggedSearch, policy: LoggingPolicy | None) -> None:
    if policy is None:
        return
    kind, never = ("randomised", 0.0) if search.depth is not None else ("plain", 1.0)
    if policy.fraction == never:
        raise ValueError(
            f"query {query!r} has a {kind} search but the logging policy's randomised "
            f"fraction is {policy.fraction}: pass the policy the log was written with"
        )


def _live_page(
    query: str, searches: Sequence[LoggedSearch], live_pages: Mapping[str, Sequence[str]] | None
) -> tuple[str, ...]:
    """The live model's ranking for `query`: as given, else the page its plain searches show."""
    plain = {s.shown for s in searches if s.depth is None}
    if live_pages is not None and query in live_pages:
        page = tuple(live_pages[query])
    elif plain:
        page = max(plain, key=len)
    else:
        raise ValueError(
            f"query {query!r} has no plain search and no live page was given: with a logging "
            "policy, the chance of each document being shown needs the live model's ranking"
        )
    for shown in plain:
        if shown != page[: len(shown)]:
            raise ValueError(
                f"query {query!r}: a plain search showed {list(shown)} but the live page is "
                f"{list(page[: len(shown)])}: the live ranking must be deterministic per query "
                "within the log"
            )
    return page
