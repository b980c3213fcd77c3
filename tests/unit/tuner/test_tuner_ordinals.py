"""One rank source: the shown hit list ranks for training, propensities and the gate; the events'
ordinals are only cross-checked, per application."""

from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest

from tuner.config import TunerSettings
from tuner.iteration import learning_data
from tuner.ordinals import OrdinalCheck, check_ordinals, ordinal_metrics, report_ordinals
from tuner.sessions import Action, Session

DOCS = [f"d{i}" for i in range(12)]


def click_log(base: int | None, application: str | None = "shop") -> list[Session]:
    """The same shuffled searches and clicks, their ordinals counted from `base` (None: no
    ordinal sent), plus one click on a hit missing from its query's list."""
    rng = random.Random(5)
    sessions = []
    for i in range(300):
        query = f"query {i % 30}"
        hits = tuple(rng.sample(DOCS, 6))
        clicked = [h for h in hits if rng.random() < 0.4 / (1 + hits.index(h))]
        actions = [Action(h, rng.choice(["click", "purchase"]), hits.index(h)) for h in clicked]
        if i == 7:
            actions.append(Action("not-shown", "click", 2))
        ordinal = (lambda rank: None) if base is None else (lambda rank: rank + base)
        actions = [replace_ordinal(a, ordinal(a.ordinal)) for a in actions]
        sessions.append(
            Session(f"s{i}", query, hits, tuple(actions), randomized=True, application=application)
        )
    return sessions


def replace_ordinal(action: Action, ordinal: int | None) -> Action:
    return action._replace(ordinal=ordinal)


def test_one_and_zero_based_ordinals_or_none_train_and_gate_the_same() -> None:
    settings = TunerSettings(propensity_min_randomized=50)
    learned = {}
    for base in (0, 1, None):
        sessions = click_log(base)
        learned[base] = learning_data(sessions[:200], sessions[200:], settings)
    zero, one, none = learned[0], learned[1], learned[None]
    assert zero.pairs and zero.judgments.outcomes
    assert zero.pairs == one.pairs == none.pairs  # same positives, weights, hard negatives
    assert zero.judgments == one.judgments == none.judgments  # same gains and ips weights
    curve = [zero.propensity(k) for k in range(10)]
    assert (
        curve == [one.propensity(k) for k in range(10)] == [none.propensity(k) for k in range(10)]
    )
    assert curve[3] < curve[0]  # the fit saw position bias, so the weights above differ by rank
    assert "not-shown" not in {p.positive_id for p in zero.pairs}
    assert [c.base for c in (*zero.ordinals, *one.ordinals)] == [0, 1]
    assert none.ordinals[0].checked == 0 and none.ordinals[0].missing > 0


def test_the_base_is_detected_per_application_and_mismatches_counted_under_it() -> None:
    web = click_log(1, "web")
    wrong = 0
    for i, session in enumerate(web[:40]):  # a few events whose ordinal is off by two
        if session.actions and i % 3 == 0:
            first, *rest = session.actions
            web[i] = replace(session, actions=(replace_ordinal(first, first.ordinal + 2), *rest))
            wrong += 1
    ios = click_log(0, "ios")
    unnamed = click_log(None, None)[:50]
    checks = check_ordinals([*web, *ios, *unnamed])
    total = sum(len(s.actions) for s in web)
    assert [c.application for c in checks] == [None, "ios", "web"]
    assert checks[0] == OrdinalCheck(None, 0, 0, 0, sum(len(s.actions) for s in unnamed))
    assert checks[1] == OrdinalCheck("ios", 0, sum(len(s.actions) for s in ios), 1, 0)
    assert checks[2] == OrdinalCheck("web", 1, total, wrong + 1, 0)  # +1: the unshown hit
    assert ordinal_metrics(checks)["ordinal_mismatches"] == wrong + 2


def test_a_tie_between_the_bases_reads_as_zero_based() -> None:
    hits = ("a", "b")
    sessions = [Session("1", "q", hits, (Action("a", "click", 0), Action("b", "click", 2)))]
    [check] = check_ordinals(sessions)
    assert (check.base, check.checked, check.mismatches) == (0, 2, 1)


def test_mismatches_are_a_warning_naming_the_application_base_count_and_total(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tuner.ordinals")
    report_ordinals([OrdinalCheck("web", 1, 120, 3, 4), OrdinalCheck("ios", 0, 50, 0, 0)])
    warning, info = caplog.records
    assert warning.levelno == logging.WARNING
    assert "'web'" in warning.message and "3 of 120" in warning.message
    assert "base 1" in warning.message
    assert info.levelno == logging.INFO and "'ios'" in info.message and "all 50" in info.message
