"""The gate's off-policy estimate: what any model would earn on the live model's held-out log.

`dr_dcg@10` is the estimated attraction-weighted DCG@10 of a model's ranking, per validation
query, from the searches the live model logged (`tuner.offpolicy`: policy-aware and doubly
robust). Unlike `ips_dcg@10`, which re-orders each session's ten shown hits, it credits a model
for a document the live model put below the page (rank 10 to depth) that the randomised searches
showed, and clicks proved good. The steps:

1. `offpolicy_log(sessions, live_version, weights)` keeps the searches the live model served on
   its own policy: arm `production` (or an experiment's `control`) and served by
   `live_version`. Interleaved or candidate-arm searches, and older models' searches (earlier
   batches' held-out sessions), follow another policy and are left out, counted by reason. So are
   shuffled searches of another depth than the log's usual one, and queries whose plain pages
   disagree (the index changed under them). The logging policy is read off the log: the share
   of shuffled searches and their depth (`serving.randomization` as it was).
2. Per logged query, each model ranks the pool of documents any of its searches showed (the page
   and whatever shuffles reached below it) by its own scores (`rank_pools`).
3. The live ranking the estimator needs is the logged plain page, then the rest of the pool in the
   live model's order; documents the live model ranked in its top depth but no search ever showed
   are unknown here and count as worth nothing to every model alike.

Queries count equally (a test query does too); `OffPolicyScoring.values` gives one value per query
in `queries` order, the unit of the gate's clustered bound.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tuner import progress
from tuner.embed_sides import query_side, sliced
from tuner.examination import Cascade
from tuner.offpolicy import ClickEstimates, estimate_clicks
from tuner.offpolicy_evidence import LoggedSearch, LoggingPolicy, logged_searches
from tuner.pairs import query_key
from tuner.propensity import Propensity
from tuner.sessions import Session

__all__ = [
    "DR_DCG",
    "LIVE_ARMS",
    "OffPolicyLog",
    "OffPolicyScoring",
    "offpolicy_log",
    "offpolicy_scoring",
    "rank_pools",
]

log = logging.getLogger(__name__)
DR_DCG = "dr_dcg@10"
LIVE_ARMS = frozenset({"production", "control"})  # searches the live model served on its own
Embed = Callable[[Sequence[Any]], np.ndarray]


@dataclass(frozen=True)
class OffPolicyLog:
    """The live model's own held-out searches, as the estimator reads them."""

    searches: tuple[LoggedSearch, ...]
    queries: dict[str, str]  # query key -> query text
    pools: dict[str, tuple[str, ...]]  # query key -> every document its searches showed
    pages: dict[str, tuple[str, ...]]  # query key -> its plain page (absent: only shuffles)
    policy: LoggingPolicy
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> sessions

    @property
    def doc_ids(self) -> set[str]:
        return {d for pool in self.pools.values() for d in pool}


def offpolicy_log(
    sessions: Sequence[Session], live_version: str | None, outcome_weights: Mapping[str, float]
) -> OffPolicyLog | None:
    """The searches of `sessions` that the live model (`live_version`; None: any) served on its
    own policy; None when none is left."""
    left_out: Counter[str] = Counter()
    kept = [s for s in sessions if _own(s, live_version, left_out)]
    depth = _usual_depth(kept)
    kept = [s for s in kept if _same_depth(s, depth, left_out)]
    kept = _consistent(kept, left_out)
    if not kept:
        return None
    shuffled = sum(s.randomized for s in kept)
    shown = max(len(s.hit_ids) for s in kept)
    policy = LoggingPolicy(shuffled / len(kept), depth if depth is not None else shown)
    searches = tuple(logged_searches(kept, outcome_weights))
    pools: dict[str, dict[str, None]] = {}
    pages: dict[str, tuple[str, ...]] = {}
    queries: dict[str, str] = {}
    for session in kept:
        key = query_key(session.user_query)
        queries.setdefault(key, session.user_query)
        pools.setdefault(key, {}).update(dict.fromkeys(session.hit_ids))
        if not session.randomized and len(session.hit_ids) > len(pages.get(key, ())):
            pages[key] = session.hit_ids
    if left_out:
        log.info(
            "off-policy log: %d searches of %d queries (%.0f%% shuffled to depth %d); left out: %s",
            len(searches),
            len(queries),
            100 * policy.fraction,
            policy.depth,
            ", ".join(f"{n} {why}" for why, n in sorted(left_out.items())),
        )
    return OffPolicyLog(
        searches,
        queries,
        {k: tuple(v) for k, v in pools.items()},
        pages,
        policy,
        dict(left_out),
    )


def _own(session: Session, live_version: str | None, left_out: Counter[str]) -> bool:
    if not session.hit_ids:
        left_out["sessions without hits"] += 1
    elif session.arm is not None and session.arm not in LIVE_ARMS:
        left_out[f"{session.arm} searches (another policy)"] += 1
    elif live_version is not None and session.model_version not in (None, live_version):
        left_out["searches of an earlier model"] += 1
    else:
        return True
    return False


def _usual_depth(sessions: Sequence[Session]) -> int | None:
    depths = Counter(s.explored_depth for s in sessions if s.randomized)
    return depths.most_common(1)[0][0] if depths else None


def _same_depth(session: Session, depth: int | None, left_out: Counter[str]) -> bool:
    if not session.randomized or session.explored_depth == depth:
        return True
    left_out["shuffles of another depth"] += 1
    return False


def _consistent(sessions: Sequence[Session], left_out: Counter[str]) -> list[Session]:
    """`sessions` without the queries whose plain pages disagree (one live ranking per query)."""
    pages: dict[str, set[tuple[str, ...]]] = {}
    for s in sessions:
        if not s.randomized:
            pages.setdefault(query_key(s.user_query), set()).add(s.hit_ids)
    broken = {key for key, found in pages.items() if not _prefixes(found)}
    kept = [s for s in sessions if query_key(s.user_query) not in broken]
    if broken:
        left_out["searches of queries whose plain pages disagree"] += len(sessions) - len(kept)
    return kept


def _prefixes(pages: set[tuple[str, ...]]) -> bool:
    longest = max(pages, key=len)
    return all(page == longest[: len(page)] for page in pages)


def rank_pools(
    embed: Embed, offpolicy: OffPolicyLog, doc_texts: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Per logged query, its pool ordered by `embed`'s cosine scores (documents without a text
    or image cannot be ranked and are left out)."""
    ids = sorted(d for d in offpolicy.doc_ids if doc_texts.get(d) is not None)
    column = {d: j for j, d in enumerate(ids)}
    keys = list(offpolicy.queries)
    if not ids:
        return {key: [] for key in keys}
    doc_vectors = embed([doc_texts[d] for d in ids])  # (n_docs, dim)
    queries = query_side(embed)([offpolicy.queries[k] for k in keys])  # (n_queries, dim)
    scores = queries @ doc_vectors.T  # (n_queries, n_docs)
    rankings: dict[str, list[str]] = {}
    for i, key in enumerate(keys):
        pool = [d for d in offpolicy.pools[key] if d in column]
        columns = np.array([column[d] for d in pool], dtype=np.int64)
        order = np.argsort(-scores[i, columns], kind="stable")  # ties keep the pool's order
        rankings[key] = [pool[j] for j in order]
    return rankings


@dataclass(frozen=True)
class OffPolicyScoring:
    """The click estimates of one log (fitted once); `values(embed)` scores any model on them."""

    log: OffPolicyLog
    estimates: ClickEstimates

    @property
    def queries(self) -> tuple[str, ...]:
        return self.estimates.queries

    def values(self, embed: Embed, doc_texts: Mapping[str, Any]) -> np.ndarray:
        """The estimated DCG@10 of `embed`'s ranking of each query's pool, in `queries` order."""
        return self.estimates.values(rank_pools(embed, self.log, doc_texts))

    def texts_to_embed(self, doc_texts: Mapping[str, Any]) -> int:
        """How many texts (or images) `values` embeds."""
        return _texts_to_embed(self.log, doc_texts)


def offpolicy_scoring(
    offpolicy: OffPolicyLog,
    live_embed: Embed,
    doc_texts: Mapping[str, Any],
    propensity: Propensity,
    cascade: Cascade | None = None,
) -> OffPolicyScoring:
    """Fit the click estimates of `offpolicy`, with the live ranking as each query's plain page
    followed by the rest of its pool in the live model's order; `cascade`: the fitted cascade
    examination to read the clicks with (`gate.examination`; None: position-based)."""
    with progress.stage("offpolicy_fit", "text", _texts_to_embed(offpolicy, doc_texts)) as done:
        embed = sliced(live_embed, done)
        live_order = rank_pools(embed, offpolicy, doc_texts)
    pages = {}
    for key, order in live_order.items():
        page = offpolicy.pages.get(key, ())
        pages[key] = [*page, *(d for d in order if d not in page)]
    searches = list(offpolicy.searches)
    if cascade is not None:
        searches, propensity = cascade.as_position_based(searches, propensity)
    estimates = estimate_clicks(searches, propensity, offpolicy.policy, pages)
    return OffPolicyScoring(offpolicy, estimates)


def _texts_to_embed(offpolicy: OffPolicyLog, doc_texts: Mapping[str, Any]) -> int:
    """How many texts (or images) `rank_pools` embeds: the pooled documents, then the queries."""
    docs = sum(1 for d in offpolicy.doc_ids if doc_texts.get(d) is not None)
    return docs + len(offpolicy.queries) if docs else 0
