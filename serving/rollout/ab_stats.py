"""Per-arm metrics of an experiment from the UBI indexes, a sequential test, and the policy.

Metrics per arm (from `ubi_queries` joined with `ubi_events` by `query_id`; the arm comes from
`query_attributes.arm` of the experiment's queries): click-through rate (queries with >= 1
click), MRR of the first click, add_to_cart and purchase rates per query, each with a 95 %
interval (Wilson for rates, normal approximation for MRR). Interleaved queries give
wins / losses / ties instead (clicks credited to the team that contributed the hit).

The test is the mixture SPRT of Johari et al. (2017, "Always valid inference") on the CTR
difference (or the interleaving win share minus 1/2): with estimate d, variance V and a normal
mixture of variance tau^2,  Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2))).
Stopping the first time Lambda >= 1/alpha keeps the false-decision rate <= alpha however often
one looks, so the scheduler may call `decide` after every batch of clicks.

Before the test, guards (`guard`) stop a candidate at once when its error rate or p99 latency
(absolute, or as a multiple of the control arm's) breaks `serving.ab`'s bounds; the counts come
from the replicas' arm-health documents (serving/rollout/arm_health.py), not from the UBI indexes.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException
from opensearchpy.helpers import scan

from serving.config import ABSettings
from serving.errors import ExperimentError
from serving.rollout.ab import CANDIDATE, CONTROL, ArmHealth, Experiment
from serving.rollout.interleave import InterleaveTally, credit

__all__ = [
    "ArmMetrics",
    "Decision",
    "ExperimentMetrics",
    "decide",
    "guard",
    "metrics_of",
    "msprt",
    "wilson",
]

Z95 = 1.959964
TERMS_CHUNK = 1000


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def msprt(estimate: float, variance: float, tau: float) -> float:
    """The mixture likelihood ratio Lambda of a normal estimate against 0 (see module doc)."""
    if variance <= 0:
        return 1.0
    tau2 = tau * tau
    exponent = estimate * estimate * tau2 / (2 * variance * (variance + tau2))
    return math.sqrt(variance / (variance + tau2)) * math.exp(min(exponent, 700.0))


@dataclass
class ArmMetrics:
    """One arm's outcomes: queries, and per query its first-click rank and actions."""

    arm: str
    queries: int = 0
    clicked: int = 0
    carts: int = 0
    purchases: int = 0
    reciprocal_ranks: list[float] = field(default_factory=list, repr=False)

    @property
    def ctr(self) -> float:
        return self.clicked / self.queries if self.queries else 0.0

    @property
    def mrr(self) -> float:
        return sum(self.reciprocal_ranks) / self.queries if self.queries else 0.0

    def mrr_interval(self) -> tuple[float, float]:
        n = self.queries
        if n < 2:
            return (0.0, 1.0)
        values = self.reciprocal_ranks + [0.0] * (n - len(self.reciprocal_ranks))
        mean = sum(values) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        return (max(0.0, mean - Z95 * sd / math.sqrt(n)), min(1.0, mean + Z95 * sd / math.sqrt(n)))

    def as_dict(self) -> dict[str, Any]:
        def rate(hits: int) -> dict[str, Any]:
            low, high = wilson(hits, self.queries)
            return {
                "value": round(hits / self.queries, 4) if self.queries else 0.0,
                "ci95": [round(low, 4), round(high, 4)],
            }

        low, high = self.mrr_interval()
        return {
            "queries": self.queries,
            "ctr": rate(self.clicked),
            "mrr": {"value": round(self.mrr, 4), "ci95": [round(low, 4), round(high, 4)]},
            "add_to_cart_rate": rate(self.carts),
            "purchase_rate": rate(self.purchases),
        }


@dataclass
class ExperimentMetrics:
    """Metrics of both arms (split mode) or the interleaving tally, plus replica health."""

    arms: dict[str, ArmMetrics]
    interleave: InterleaveTally = field(default_factory=InterleaveTally)
    health: Mapping[str, ArmHealth] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "arms": {name: m.as_dict() for name, m in self.arms.items()},
            "interleave": vars(self.interleave),
            "health": {name: h.as_dict() for name, h in self.health.items()},
        }


@dataclass(frozen=True)
class Decision:
    """What the policy says: continue, promote the candidate, or roll it back; and why."""

    action: Literal["continue", "promote", "rollback"]
    reason: str
    likelihood_ratio: float = 1.0
    estimate: float = 0.0


def metrics_of(
    client: OpenSearch, experiment: Experiment, queries_index: str, events_index: str
) -> ExperimentMetrics:
    """Read the experiment's queries and their events from the UBI indexes."""
    query_filter = {"term": {"query_attributes.experiment": experiment.id}}
    queries = {q["query_id"]: q for q in _scan(client, queries_index, query_filter)}
    events: dict[str, list[dict]] = defaultdict(list)
    ids = list(queries)
    for start in range(0, len(ids), TERMS_CHUNK):
        chunk = {"terms": {"query_id": ids[start : start + TERMS_CHUNK]}}
        for event in _scan(client, events_index, chunk):
            events[event["query_id"]].append(event)
    return tally(queries.values(), events)


def tally(queries: Iterable[dict], events: Mapping[str, list[dict]]) -> ExperimentMetrics:
    """Per-arm metrics (or interleaving wins) from query records and their events."""
    arms = {CONTROL: ArmMetrics(CONTROL), CANDIDATE: ArmMetrics(CANDIDATE)}
    wins = InterleaveTally()
    for query in queries:
        attributes = query.get("query_attributes") or {}
        mine = events.get(query["query_id"], [])
        ranks = [r for e in mine if e.get("action_name") == "click" if (r := _rank(e, query)) >= 0]
        if attributes.get("arm") == "interleave":
            wins.add(credit(attributes.get("interleave_teams") or [], ranks))
            continue
        metrics = arms.get(str(attributes.get("arm")))
        if metrics is None:
            continue
        actions = {e.get("action_name") for e in mine}
        metrics.queries += 1
        metrics.clicked += int(bool(ranks))
        metrics.carts += int("add_to_cart" in actions)
        metrics.purchases += int("purchase" in actions)
        if ranks:
            metrics.reciprocal_ranks.append(1.0 / (min(ranks) + 1))
    return ExperimentMetrics(arms, wins)


def decide(experiment: Experiment, metrics: ExperimentMetrics, settings: ABSettings) -> Decision:
    """The policy: guards first (stop a failing candidate at once), then the mSPRT."""
    broken = guard(metrics.health, settings)
    if broken is not None:
        return Decision("rollback", f"guard: {broken}")
    if experiment.mode == "interleave":
        estimate, variance, n = _interleave_estimate(metrics.interleave)
        what = "win share - 1/2"
    else:
        estimate, variance, n = _ctr_estimate(metrics.arms[CONTROL], metrics.arms[CANDIDATE])
        what = "CTR difference"
    if n < settings.min_queries:
        return Decision(
            "continue", f"{n} observations; waiting for min_queries={settings.min_queries}"
        )
    ratio = msprt(estimate, variance, settings.mixture_sd)
    if ratio < 1.0 / settings.alpha:
        return Decision(
            "continue",
            f"{what} {estimate:+.4f} not yet conclusive "
            f"(Lambda {ratio:.2f} < {1 / settings.alpha:.0f})",
            ratio,
            estimate,
        )
    action: Literal["promote", "rollback"] = "promote" if estimate > 0 else "rollback"
    return Decision(
        action,
        f"{what} {estimate:+.4f}, Lambda {ratio:.1f} >= "
        f"{1 / settings.alpha:.0f} (alpha={settings.alpha})",
        ratio,
        estimate,
    )


def guard(health: Mapping[str, ArmHealth], settings: ABSettings) -> str | None:
    """Why the candidate must stop now (error rate, p99, or p99 against control's), or None.

    A guard looks only at an arm with `min_requests_for_guard` requests; the p99 ratio also
    needs that many on the control arm (interleaved searches run both arms, so only the
    absolute thresholds apply to them)."""
    least = settings.min_requests_for_guard
    candidate = health.get(CANDIDATE) or health.get("interleave")
    if candidate is None or candidate.requests < least:
        return None
    name = "candidate" if CANDIDATE in health else "interleaved"
    if candidate.error_rate > settings.max_error_rate:
        return (
            f"{name} error rate {candidate.error_rate:.3f} ({candidate.errors} of "
            f"{candidate.requests} searches failed) > max_error_rate={settings.max_error_rate}"
        )
    p99 = candidate.p99_ms
    if p99 > settings.max_p99_ms:
        return f"{name} p99 {p99:.0f} ms > max_p99_ms={settings.max_p99_ms}"
    control = health.get(CONTROL)
    if name == "candidate" and control is not None and control.requests >= least:
        base = control.p99_ms
        if base > 0 and p99 / base > settings.max_p99_ratio:
            return (
                f"candidate p99 {p99:.1f} ms is {p99 / base:.1f}x control's {base:.1f} ms "
                f"> max_p99_ratio={settings.max_p99_ratio}"
            )
    return None


def _ctr_estimate(control: ArmMetrics, candidate: ArmMetrics) -> tuple[float, float, int]:
    n = min(control.queries, candidate.queries)
    if n == 0:
        return 0.0, 0.0, 0
    pa, pb = control.ctr, candidate.ctr
    # a floor on p(1-p) keeps V > 0 when an arm has no clicks (or only clicks) yet
    va = max(pa * (1 - pa), 0.25 / control.queries) / control.queries
    vb = max(pb * (1 - pb), 0.25 / candidate.queries) / candidate.queries
    return pb - pa, va + vb, n


def _interleave_estimate(tally_: InterleaveTally) -> tuple[float, float, int]:
    decided = tally_.wins + tally_.losses
    if decided == 0:
        return 0.0, 0.0, 0
    return tally_.wins / decided - 0.5, 0.25 / decided, decided


def _rank(event: dict, query: dict) -> int:
    """The clicked hit's place in the list the query showed (-1: not shown). The event's
    `position.ordinal` is not read: front ends count from 0 or 1, or leave it out, and the
    tuner takes ranks from the shown list too."""
    attributes = event.get("event_attributes") or {}
    target = attributes.get("object") if isinstance(attributes, dict) else None
    object_id = target.get("object_id") if isinstance(target, dict) else None
    hits = [str(h) for h in query.get("query_response_hit_ids") or []]
    return hits.index(str(object_id)) if object_id is not None and str(object_id) in hits else -1


def _scan(client: OpenSearch, index: str, query: dict) -> Iterable[dict]:
    try:
        for hit in scan(client, index=index, query={"query": query}, size=1000):
            yield hit["_source"]
    except NotFoundError:
        return
    except OpenSearchException as exc:
        raise ExperimentError(f"cannot read {index!r}: {exc}") from exc
