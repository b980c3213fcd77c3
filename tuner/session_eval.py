"""Score a model on held-out sessions and on a judged collection, with the same metrics.

On sessions, the graded gain of a document for a query is the largest outcome weight any session
of that query gave it (click 1, add_to_cart 3, purchase 5), times the clipped inverse examination
propensity of the rank it was shown at when a propensity is given. Without that correction the
logged clicks sit where the live model put them, and a re-ranking by the live model scores best
on its own log by construction. nDCG@10, MRR@10 and Recall@10/100 come from `tuner.metrics`.

What a model ranks for each query (`tuner.gate.rank_against`) is a trade-off, measured:

- `shown` (default): the hits shown for that query. Unbiased between the live model and a
  candidate, but blind to a candidate that pulls documents from outside the shown hits into its
  top 10. On cranfield it passed a candidate at +0.026 whose test nDCG@10 fell 0.012.
- `pool`: every document shown in validation, for every query; a document shown only for other
  queries counts as not relevant. That sees such a candidate, but favours the live model: its top
  10 over the pool are exactly the hits it showed, while a candidate that finds a document shown
  for a similar query gets no credit for it. On homedepot-dev, where many queries overlap, it
  rejected the first candidate at -0.029.

Both ways, click labels are missing wherever the live model put a relevant document too deep
to be looked at, and inverse propensities cannot restore a label that was never observed: on
homedepot-dev a candidate whose re-ranking of the shown hits was +0.046 nDCG@10 better by the
true judgments scored -0.016 on click labels. `ips_dcg@10` is the counterfactual estimate that
is unbiased under the position-based model (Joachims et al., WSDM 2017; Agarwal et al.,
"Counterfactual Learning-to-Rank for Additive Metrics and Deep Models", 2018): per session,

    sum over hits d with an outcome:  w(d) / p(k_d) / log2(r_model(d) + 2)   (r_model < 10)

where k_d is the rank d was shown at, w its outcome weight and r_model its rank when the model
re-orders that session's shown hits, averaged over the sessions that showed hits. Its expectation
is the attraction-weighted DCG@10 of the model's order, whatever order the log came from. It is
the gate's default primary metric.

On a judged collection the model ranks the whole corpus (exhaustively, in
memory), which suits the small general query set of the gate.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from serving.index.corpus import document_text
from tuner import progress
from tuner.embed_sides import query_side, sliced
from tuner.judged import JudgedCollection
from tuner.metrics import DEPTH_100, rank_metrics
from tuner.offline_estimate import DR_DCG, OffPolicyScoring
from tuner.pairs import query_key
from tuner.propensity import Propensity, clipped_inverse_propensity
from tuner.sessions import Session

__all__ = [
    "Embed",
    "RankedSessions",
    "Scorer",
    "Scores",
    "SessionJudgments",
    "SessionOutcomes",
    "evaluate_collection_in_memory",
    "evaluate_sessions",
    "ips_dcg",
    "ips_dcg_per_session",
    "part_metrics",
    "rank_sessions",
    "score_sessions",
    "session_judgments",
    "split_scores",
    "torch_embedder",
]

Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, dim) L2-normalised float32
RankAgainst = Literal["shown", "pool"]
IPS_DCG = "ips_dcg@10"


@dataclass(frozen=True)
class SessionOutcomes:
    """One session as `ips_dcg@10` reads it: its query key, the hits shown in order, and per
    hit with an outcome its outcome weight times its clipped inverse propensity (none: {})."""

    query: str
    shown: tuple[str, ...]
    weighted: dict[str, float]


@dataclass(frozen=True)
class SessionJudgments:
    """Per query key: its text, the shown candidates and the graded gains from outcomes."""

    queries: dict[str, str]
    candidates: dict[str, list[str]]
    qrels: dict[str, dict[str, int]]
    outcomes: tuple[SessionOutcomes, ...] = ()  # per session that showed hits, for ips_dcg@10

    @property
    def doc_ids(self) -> list[str]:
        return sorted({d for docs in self.candidates.values() for d in docs})


def session_judgments(
    sessions: Sequence[Session],
    outcome_weights: Mapping[str, float],
    propensity: Propensity | None = None,
    max_ipw: float = 10.0,
) -> SessionJudgments:
    """Judgments from the outcomes of `sessions`; queries with no outcome are left out."""
    queries: dict[str, str] = {}
    candidates: dict[str, dict[str, None]] = {}
    qrels: dict[str, dict[str, int]] = {}
    outcomes: list[SessionOutcomes] = []
    for session in sessions:
        key = query_key(session.user_query)
        queries.setdefault(key, session.user_query)
        candidates.setdefault(key, {}).update(dict.fromkeys(session.hit_ids))
        gains = qrels.setdefault(key, {})
        weighted: dict[str, float] = {}
        for action in session.actions:
            weight = outcome_weights.get(action.action_name, 0.0)
            if weight > 0 and action.object_id in candidates[key]:
                rank = session.rank_of(action.object_id)  # the shown position, not the ordinal
                if propensity is not None and rank is not None:
                    weight *= clipped_inverse_propensity(propensity, rank, max_ipw)
                gain = max(1, round(weight))
                gains[action.object_id] = max(gains.get(action.object_id, 0), gain)
                if action.object_id in session.hit_ids:
                    weighted[action.object_id] = max(weighted.get(action.object_id, 0.0), weight)
        if session.hit_ids:  # a session without an outcome counts too: it adds 0
            outcomes.append(SessionOutcomes(key, session.hit_ids, weighted))
    judged = {k for k, gains in qrels.items() if gains}
    return SessionJudgments(
        queries={k: queries[k] for k in judged},
        candidates={k: list(candidates[k]) for k in judged},
        qrels={k: qrels[k] for k in judged},
        outcomes=tuple(outcomes),
    )


def evaluate_sessions(
    embed: Embed,
    judgments: SessionJudgments,
    doc_texts: Mapping[str, str],
    rank_against: RankAgainst = "shown",
) -> dict[str, float]:
    """Metrics of `embed` ranking, per query, its shown hits or the pool of all shown ones."""
    return score_sessions(embed, judgments, doc_texts, rank_against)[0]


def score_sessions(
    embed: Embed,
    judgments: SessionJudgments,
    doc_texts: Mapping[str, str],
    rank_against: RankAgainst = "shown",
) -> tuple[dict[str, float], np.ndarray]:
    """`evaluate_sessions`' metrics and the per-session ips_dcg@10 values they average, in the
    order of `judgments.outcomes` (the gate pairs a candidate's with the live model's)."""
    ranked = rank_sessions(embed, judgments, doc_texts, rank_against)
    return part_metrics(judgments, ranked), ranked.per_session


@dataclass(frozen=True)
class RankedSessions:
    """One model's scores of each validation query's candidates, before any averaging."""

    run: dict[str, dict[str, float]]  # query key -> {doc id: score} of what it ranks
    per_session: np.ndarray  # (len(judgments.outcomes),) ips_dcg@10 per session


def rank_sessions(
    embed: Embed,
    judgments: SessionJudgments,
    doc_texts: Mapping[str, str],
    rank_against: RankAgainst = "shown",
) -> RankedSessions:
    """Embed every validation query and candidate once and score what `rank_against` ranks."""
    if not judgments.qrels:
        raise ValueError("no validation session has an outcome: nothing to evaluate")
    ids = [d for d in judgments.doc_ids if doc_texts.get(d)]
    column = {d: j for j, d in enumerate(ids)}
    doc_vectors = embed([doc_texts[d] for d in ids])  # (n_docs, dim)
    keys = list(judgments.queries)
    queries = query_side(embed)([judgments.queries[k] for k in keys])  # (n_queries, dim)
    scores = queries @ doc_vectors.T  # (n_queries, n_docs)
    run: dict[str, dict[str, float]] = {}
    for i, key in enumerate(keys):
        if rank_against == "pool":
            ranked = [ids[j] for j in np.argsort(-scores[i])[:DEPTH_100]]
        else:
            ranked = [d for d in judgments.candidates[key] if d in column]
        run[key] = {d: float(scores[i, column[d]]) for d in ranked}
    row = {key: i for i, key in enumerate(keys)}
    per_session = ips_dcg_per_session(
        judgments.outcomes, lambda k, d: scores[row[k], column[d]] if d in column else -np.inf
    )
    return RankedSessions(run, per_session)


def part_metrics(
    judgments: SessionJudgments, ranked: RankedSessions, queries: Collection[str] | None = None
) -> dict[str, float]:
    """The metrics of `ranked` over the validation queries in `queries` (None: all of them):
    the rank metrics over those that have an outcome, ips_dcg@10 over their sessions. Empty
    when none of them has an outcome."""
    judged = [k for k in judgments.qrels if queries is None or k in queries]
    if not judged:
        return {}
    metrics = rank_metrics({k: judgments.qrels[k] for k in judged}, ranked.run)
    values = ranked.per_session[_sessions_of(judgments, queries)]
    metrics[IPS_DCG] = float(values.mean()) if values.size else 0.0
    return metrics


def _sessions_of(judgments: SessionJudgments, queries: Collection[str] | None) -> np.ndarray:
    """(len(judgments.outcomes),) bool: the sessions whose query is in `queries` (None: all)."""
    return np.array([queries is None or o.query in queries for o in judgments.outcomes], dtype=bool)


def ips_dcg(
    outcomes: Sequence[SessionOutcomes], score: Callable[[str, str], float], depth: int = 10
) -> float:
    """Mean over `outcomes` of the inverse-propensity weighted DCG@`depth` of the order that
    `score(query, doc)` gives each session's shown hits (see the module doc)."""
    values = ips_dcg_per_session(outcomes, score, depth)
    return float(values.mean()) if values.size else 0.0


def ips_dcg_per_session(
    outcomes: Sequence[SessionOutcomes], score: Callable[[str, str], float], depth: int = 10
) -> np.ndarray:
    """The value of `ips_dcg` for each session of `outcomes`, in order (0 without outcome)."""
    values = np.zeros(len(outcomes))
    for i, session in enumerate(outcomes):
        if not session.weighted:
            continue
        order = sorted(session.shown, key=lambda d: -score(session.query, d))[:depth]
        values[i] = sum(
            session.weighted[d] / np.log2(r + 2)
            for r, d in enumerate(order)
            if d in session.weighted
        )
    return values


def evaluate_collection_in_memory(
    embed: Embed, collection: JudgedCollection, split: str, max_queries: int | None = None
) -> dict[str, float]:
    """Metrics of `embed` ranking the whole corpus of `collection` for the `split` queries."""
    queries = collection.split_queries(split)
    ids = sorted(queries)[:max_queries]
    corpus = list(collection.corpus())
    texts = [document_text(doc, ["title", "text"]) for doc in corpus]
    doc_vectors = embed(texts)  # (n_docs, dim)
    query_vectors = query_side(embed)([queries[q] for q in ids])  # (n_queries, dim)
    scores = query_vectors @ doc_vectors.T  # (n_queries, n_docs)
    top = np.argsort(-scores, axis=1)[:, :DEPTH_100]
    run = {
        qid: {str(corpus[j]["_id"]): float(scores[i, j]) for j in top[i]}
        for i, qid in enumerate(ids)
    }
    return rank_metrics({q: collection.qrels[q] for q in ids}, run)


def torch_embedder(model, batch_size: int = 32) -> Embed:  # type: ignore[no-untyped-def]
    """`Embed` of a sentence-transformers model (normalised, no gradients)."""

    def embed(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
        return model.encode(  # no bar: a scoring pass logs `tuner.progress` lines instead
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )

    return embed


@dataclass(frozen=True)
class Scores:
    """A model's metrics on the validation sessions and on the general set (if configured).

    With a select / confirm split (`Scorer.select`), `validation` and `per_session` cover the
    confirm part (what the gate decides on) and `selection` the select part (what the
    hyperparameter search picks on); without one both cover all validation sessions."""

    validation: dict[str, float]
    general: dict[str, float] | None = None
    per_session: np.ndarray | None = None  # ips_dcg@10 per confirm session, for the gate
    queries: tuple[str, ...] = ()  # the query key of each `per_session` value
    selection: dict[str, float] | None = None  # select-part metrics; None: no split
    per_query: np.ndarray | None = None  # dr_dcg@10 per confirm query (tuner.offline_estimate)
    per_query_keys: tuple[str, ...] = ()  # the query key of each `per_query` value

    @property
    def for_selection(self) -> dict[str, float]:
        """The metrics a hyperparameter search compares sets by."""
        return self.selection if self.selection is not None else self.validation


@dataclass(frozen=True)
class Scorer:
    """Scores any model on the same data: `__call__(model) -> Scores` (empty when no data).

    `select`: the validation query keys the hyperparameter search selects on
    (`tuner.splits.select_confirm`); the others confirm. Empty: no split."""

    judgments: SessionJudgments
    doc_texts: Mapping[str, str]
    general: JudgedCollection | None = None
    general_split: str = "test"
    general_max_queries: int | None = None
    embedder: Callable[..., Embed] = torch_embedder  # model -> Embed (CLIP: tuner.model_kinds)
    rank_against: RankAgainst = "shown"
    select: frozenset[str] = frozenset()
    offpolicy: OffPolicyScoring | None = None  # dr_dcg@10 on the live model's own log

    def __call__(self, model) -> Scores:  # type: ignore[no-untyped-def]
        with progress.stage("scoring", "text", self._texts_to_embed()) as done:
            embed = sliced(self.embedder(model), done)
            scores = Scores({})
            if self.judgments.qrels:
                ranked = rank_sessions(embed, self.judgments, self.doc_texts, self.rank_against)
                scores = split_scores(self.judgments, ranked, self.select)
            if self.offpolicy is not None:
                values = self.offpolicy.values(embed, self.doc_texts)
                scores = with_offpolicy(scores, self.offpolicy.queries, values, self.select)
            if self.general is not None:
                general = evaluate_collection_in_memory(
                    embed, self.general, self.general_split, self.general_max_queries
                )
                scores = replace(scores, general=general)
        return scores

    def _texts_to_embed(self) -> int:
        """How many texts (or images) one call embeds: what its progress counts up to."""
        count = 0
        if self.judgments.qrels:
            docs = sum(1 for d in self.judgments.doc_ids if self.doc_texts.get(d))
            count += docs + len(self.judgments.queries)
        if self.offpolicy is not None:
            count += self.offpolicy.texts_to_embed(self.doc_texts)
        if self.general is not None:
            queries = len(self.general.split_queries(self.general_split))
            limit = self.general_max_queries or queries
            count += sum(1 for _ in self.general.corpus()) + min(queries, limit)
        return count


def with_offpolicy(
    scores: Scores, queries: Sequence[str], values: np.ndarray, select: Collection[str]
) -> Scores:
    """`scores` with `dr_dcg@10`: the mean of the per-query `values` over the confirm queries
    (and over the select queries for the search), and the confirm part's values for the gate."""
    confirm = np.array([q not in select for q in queries], dtype=bool)
    validation = {**scores.validation, DR_DCG: _mean(values[confirm])}
    selection = scores.selection
    if select:
        selection = {**(selection or {}), DR_DCG: _mean(values[~confirm])}
    keys = tuple(q for q, c in zip(queries, confirm, strict=True) if c)
    return replace(
        scores,
        validation=validation,
        selection=selection,
        per_query=values[confirm],
        per_query_keys=keys,
    )


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else 0.0


def split_scores(
    judgments: SessionJudgments, ranked: RankedSessions, select: Collection[str] = frozenset()
) -> Scores:
    """`Scores` of `ranked`: the confirm part (queries not in `select`) for the gate, the
    select part for the search; without `select` all sessions for both."""
    if not select:
        queries = tuple(o.query for o in judgments.outcomes)
        return Scores(part_metrics(judgments, ranked), None, ranked.per_session, queries)
    confirm = ~_sessions_of(judgments, select)
    keys = {o.query for o in judgments.outcomes} - set(select)
    return Scores(
        validation=part_metrics(judgments, ranked, keys),
        per_session=ranked.per_session[confirm],
        queries=tuple(o.query for o, c in zip(judgments.outcomes, confirm, strict=True) if c),
        selection=part_metrics(judgments, ranked, select),
    )
