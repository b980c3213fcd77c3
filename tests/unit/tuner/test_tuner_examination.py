"""Cascade-aware examination: the off-policy estimate under users who stop after a click.

Logs come from `tuner.simulator` (the users the benches simulate) on a synthetic collection
whose graded judgments are known, so every ranking's true attraction-weighted DCG@10 is too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from pydantic import ValidationError

from tuner.config import Examination, GateSettings, TunerSettings
from tuner.examination import (
    MAX_STOP,
    Cascade,
    CascadePropensity,
    examination_model,
    fit_cascade,
    stop_probability,
)
from tuner.offpolicy import estimate_clicks
from tuner.offpolicy_evidence import LoggedSearch, LoggingPolicy
from tuner.propensity import EstimatedPropensity, PowerLawPropensity, Propensity
from tuner.sessions import Action, Session
from tuner.simulator import ClickSimulator, UserModel

pytestmark = pytest.mark.unit

K, DEPTH, POOL = 10, 20, 30  # hits shown, shuffled live top, documents per query
POLICY = LoggingPolicy(fraction=0.2, depth=DEPTH)
DISCOUNT = 1.0 / np.log2(np.arange(K) + 2.0)
# classic cascade users: every rank is examined until they stop after a click (with eta > 0 the
# simulator's cascade users also stop at each unexamined rank, and rarely pass rank 4)
CASCADE_USERS = UserModel("cascade", eta=0.0, cascade_stop=0.6)
POSITION_USERS = UserModel("position", eta=1.0)


@dataclass(frozen=True)
class Log:
    """Logged searches of the live model (document r of a query at live rank r) and the truth."""

    qrels: dict[str, dict[str, int]]
    searches: list[LoggedSearch]
    users: UserModel

    def live(self) -> dict[str, list[str]]:
        return {q: [_doc(q, r) for r in range(POOL)] for q in self.qrels}

    def candidate(self) -> dict[str, list[str]]:
        """The live top 10 with its buried top-grade document (live rank 10 to 19) at rank 2."""
        ranking = {}
        for q, live in self.live().items():
            buried = next(d for d in live[K:DEPTH] if self.qrels[q][d] == 3)
            ranking[q] = [*live[:2], buried, *live[2 : K - 1]]
        return ranking

    def true_values(self, rankings: dict[str, list[str]]) -> np.ndarray:  # (queries,)
        gains = [
            [self.users.attraction(self.qrels[q].get(d, 0), 3) for d in rankings[q][:K]]
            for q in self.qrels
        ]
        return np.array(gains) @ DISCOUNT


def _doc(query: str, live_rank: int) -> str:
    return f"{query}:{live_rank}"


def simulate(users: UserModel, seed: int = 0, queries: int = 300, per_query: int = 20) -> Log:
    """Grades fall with live rank (top-grade documents high up, so cascade users often stop
    early), with one top-grade document buried at live rank 10 to 19 per query."""
    rng = np.random.default_rng(seed)
    qrels = {}
    for q in range(queries):
        top = rng.random(POOL) < 0.6 * np.exp(-np.arange(POOL) / 4.0)
        grades = np.where(top, 3, np.where(rng.random(POOL) < 0.3, 1, 0))
        grades[rng.integers(K, DEPTH)] = 3
        qrels[f"q{q}"] = {_doc(f"q{q}", r): int(g) for r, g in enumerate(grades)}
    simulator = ClickSimulator(qrels, users, seed=seed)
    searches = []
    for query in qrels:
        live = [_doc(query, r) for r in range(POOL)]
        for i in range(per_query):
            shuffled = bool(rng.random() < POLICY.fraction)
            hits = [live[j] for j in rng.permutation(DEPTH)[:K]] if shuffled else live[:K]
            events = simulator.events(f"{query}/{i}", query, hits, client_id="test")
            clicked = {e["event_attributes"]["object"]["object_id"]: 1.0 for e in events}
            depth = DEPTH if shuffled else None
            searches.append(LoggedSearch(query, tuple(hits), clicked, depth))
    return Log(qrels, searches, users)


def shuffled_click_curve(searches: list[LoggedSearch]) -> EstimatedPropensity:
    """Click rate per rank of the shuffled searches, relative to rank 0: the curve a
    position-based fit reads off randomised traffic (tuner.propensity.fit_randomized)."""
    clicks = np.zeros(K)
    for search in searches:
        if search.depth is not None:
            clicks += [d in search.outcomes for d in search.shown]
    return EstimatedPropensity(tuple(float(c) for c in np.maximum(clicks / clicks[0], 1e-3)))


def _values(
    log: Log, propensity: Propensity, cascade: bool, ranking: dict[str, list[str]] | None = None
) -> np.ndarray:
    """Estimated DCG@10 per query of `ranking` (the live one by default)."""
    searches = log.searches
    if cascade:
        searches, propensity = fit_cascade(searches).as_position_based(searches, propensity)
    estimates = estimate_clicks(searches, propensity, POLICY, log.live())
    return estimates.values(ranking if ranking is not None else log.live())


def _standard_error(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(values.size))


@pytest.fixture(scope="module")
def cascade_log() -> Log:
    return simulate(CASCADE_USERS)  # 6,000 searches, a fifth shuffled


@pytest.fixture(scope="module")
def position_log() -> Log:
    return simulate(POSITION_USERS)


def test_the_stop_probability_read_from_the_log_is_the_users(
    cascade_log: Log, position_log: Log
) -> None:
    stop, se, pages = stop_probability(cascade_log.searches)
    assert pages > 50 and se < 0.1
    assert abs(stop - CASCADE_USERS.cascade_stop) < 3 * se
    stop, se, _ = stop_probability(position_log.searches)
    assert stop < 3 * se  # position-based users do not stop after a click: ~0


def test_under_cascade_users_the_cascade_estimate_is_true_where_the_position_one_is_biased(
    cascade_log: Log,
) -> None:
    propensity = shuffled_click_curve(cascade_log.searches)
    for ranking in (cascade_log.live(), cascade_log.candidate()):
        truth = float(cascade_log.true_values(ranking).mean())
        cascade = _values(cascade_log, propensity, True, ranking)
        position = _values(cascade_log, propensity, False, ranking)
        assert abs(cascade.mean() - truth) < 3 * _standard_error(cascade)
        # documents below attractive ones are seen less than their rank says: PBM credits
        # them too little (a seventh to a quarter of the value, over ten standard errors)
        assert truth - position.mean() > 10 * _standard_error(position)
        assert position.mean() < 0.9 * truth


def test_under_position_users_the_cascade_estimate_is_the_position_one_within_noise(
    position_log: Log,
) -> None:
    propensity = PowerLawPropensity(eta=POSITION_USERS.eta)
    truth = float(position_log.true_values(position_log.live()).mean())
    position = _values(position_log, propensity, False)
    cascade = _values(position_log, propensity, True)
    assert abs(position.mean() - truth) < 3 * _standard_error(position)
    assert abs(cascade.mean() - position.mean()) < _standard_error(position)


def test_a_click_counts_once_more_for_each_click_above_it_it_survived() -> None:
    cascade = Cascade(stop=0.5, stop_se=0.1, factors=(1.0, 1.5, 2.0), pages=3)
    search = LoggedSearch("q", ("a", "b", "c", "d"), {"a": 1.0, "c": 3.0, "d": 1.0})
    (reweighted,) = cascade.reweighted([search])
    assert reweighted.outcomes == {"a": 1.0, "c": 6.0, "d": 4.0}  # / 0.5 ** (clicks above)
    curve = cascade.propensity(PowerLawPropensity(eta=1.0))
    assert [curve(j) for j in (0, 1, 2, 5)] == pytest.approx([1.0, 0.75, 2 / 3, 1 / 3])
    assert CascadePropensity(PowerLawPropensity(eta=0.0), (1.0, 1.5))(1) == 1.0  # at most 1


def _page(top: bool, below: bool, query: str = "q") -> LoggedSearch:
    clicked = {**({"a": 1.0} if top else {}), **({"c": 1.0} if below else {})}
    return LoggedSearch(query, ("a", "b", "c"), clicked)


def test_the_stop_probability_compares_clicks_below_a_clicked_and_an_unclicked_top_hit() -> None:
    # one page: top clicked 4 times (1 click below), not clicked 4 times (2 below): 1 - 1/2
    page = [_page(True, True), *[_page(True, False)] * 3, *[_page(False, True)] * 2]
    page += [_page(False, False)] * 2
    stop, se, pages = stop_probability(page)
    assert (stop, pages) == (pytest.approx(0.5), 1) and 0 < se < 1
    other = [_page(True, False, "r"), _page(False, False, "r")]  # no click below: no evidence
    assert stop_probability(page + other)[0] == pytest.approx(0.5)
    assert stop_probability([_page(True, True)] * 3) == (0.0, np.inf, 0)  # never both ways
    never_below = [_page(True, False), _page(False, True)]
    assert stop_probability(never_below)[0] == MAX_STOP  # clipped: nobody went on


def test_the_curve_is_undone_where_shuffled_searches_had_clicks_above() -> None:
    shuffles = [
        LoggedSearch("q", ("a", "b", "c"), {"a": 1.0, "b": 1.0}, depth=3),
        LoggedSearch("q", ("b", "c", "a"), {"c": 1.0}, depth=3),
    ]
    cascade = fit_cascade([*shuffles, _page(True, False, "r"), _page(False, True, "r")])
    assert cascade.stop == MAX_STOP
    # rank 1: one click, below one other: 1 / (1 - s); rank 2: one click, none above: 1,
    # made non-decreasing by the clicks' weight
    assert cascade.factors == pytest.approx((1.0, 5.5, 5.5))


def test_the_gate_setting_is_a_choice_and_position_fits_nothing(position_log: Log) -> None:
    assert GateSettings().examination is Examination.position
    assert GateSettings(examination="cascade").examination is Examination.cascade
    with pytest.raises(ValidationError, match="'position' or 'cascade'"):
        GateSettings(examination="dbn")
    sessions = [
        Session(f"s{i}", s.query, s.shown, tuple(Action(d, "click", None) for d in s.outcomes))
        for i, s in enumerate(position_log.searches)
    ]
    assert examination_model(TunerSettings(), sessions) is None
    cascade = TunerSettings(gate=GateSettings(examination=Examination.cascade))
    fitted = examination_model(cascade, sessions)
    assert fitted is not None and fitted.stop == stop_probability(position_log.searches)[0]
