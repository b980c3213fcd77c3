"""The EM position-based click model recovers the examination curve the simulator used."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from tuner.config import PropensityKind, TunerSettings
from tuner.propensity import (
    EstimatedPropensity,
    PowerLawPropensity,
    fit_position_based_model,
    fit_randomized,
    from_settings,
    non_increasing,
    varied_share,
)
from tuner.sessions import Action, Session
from tuner.simulator import ClickSimulator, UserModel

TOLERANCE = 0.05  # absolute, ranks 0-9, 20k sessions


def simulated_sessions(eta: float, sessions: int = 20_000, seed: int = 1) -> list[Session]:
    """Sessions over 50 queries x 20 judged docs, shown in a fresh random order each time
    (result randomisation), so each document is seen at many ranks."""
    rng = random.Random(seed)
    qrels = {
        f"q{q}": {f"q{q}d{d}": rng.choice([0, 0, 1, 2, 3]) for d in range(20)} for q in range(50)
    }
    simulator = ClickSimulator(qrels, UserModel(eta=eta, noise=0.05), seed=seed)
    out = []
    for i in range(sessions):
        query = f"q{rng.randrange(50)}"
        hits = rng.sample(sorted(qrels[query]), 10)
        events = simulator.events(f"s{i}", query, hits, client_id="c")
        actions = tuple(
            Action(e["event_attributes"]["object"]["object_id"], e["action_name"], None)
            for e in events
        )
        out.append(Session(f"s{i}", query, tuple(hits), actions))
    return out


@pytest.mark.parametrize("eta", [1.0, 0.5])
def test_em_recovers_the_true_examination_curve(eta: float) -> None:
    fitted = fit_position_based_model(simulated_sessions(eta), {"click": 1.0}, max_rank=10)
    true = [UserModel(eta=eta).examination(k) for k in range(10)]
    errors = [abs(f - t) for f, t in zip(fitted.theta, true, strict=True)]
    print(f"\nEM eta={eta}: max |theta - true| = {max(errors):.4f} in {fitted.iterations} iters")
    assert fitted.theta[0] == 1.0
    assert max(errors) < TOLERANCE, list(zip(fitted.theta, true, strict=True))


def test_pooling_replaces_each_rising_run_by_its_weighted_mean() -> None:
    pooled = non_increasing(np.array([1.0, 0.5, 0.7, 0.3, 0.35, 0.1]), np.array([4, 1, 3, 1, 1, 9]))
    assert pooled.tolist() == pytest.approx([1.0, 0.65, 0.65, 0.325, 0.325, 0.1])
    falling = np.array([1.0, 0.6, 0.6, 0.2])
    assert non_increasing(falling, np.ones(4)).tolist() == falling.tolist()


def test_em_on_few_sessions_never_weights_a_deeper_click_less() -> None:
    few = simulated_sessions(1.0, sessions=300, seed=5)
    raw = fit_position_based_model(few, {"click": 1.0}, monotone=False).theta
    fitted = fit_position_based_model(few, {"click": 1.0}).theta
    assert any(b > a for a, b in zip(raw, raw[1:], strict=False))  # this seed's raw fit rises
    assert all(b <= a for a, b in zip(fitted, fitted[1:], strict=False))
    assert fitted[0] == 1.0


def test_fitted_propensity_clamps_deep_ranks_to_the_last_fitted_value() -> None:
    p = EstimatedPropensity((1.0, 0.5, 0.25))
    assert [p(0), p(2), p(40)] == [1.0, 0.25, 0.25]
    with pytest.raises(ValueError, match="-1"):
        p(-1)


def test_settings_choose_em_or_power_law_and_em_needs_enough_sessions() -> None:
    sessions = simulated_sessions(1.0, sessions=300)
    em = TunerSettings(propensity=PropensityKind.em, propensity_min_sessions=200)
    assert isinstance(from_settings(em, sessions), EstimatedPropensity)
    assert from_settings(em, sessions[:50]) == PowerLawPropensity(eta=1.0)
    power = TunerSettings(propensity=PropensityKind.power_law, propensity_eta=0.5)
    assert from_settings(power, sessions) == PowerLawPropensity(eta=0.5)


def test_no_shown_hits_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no shown hits"):
        fit_position_based_model([Session("s", "q", ())], {"click": 1.0})


def test_fixed_rankings_fall_back_to_the_power_law() -> None:
    """One ranking per query leaves PBM unidentifiable: the configured power law is used."""
    randomised = simulated_sessions(1.0, sessions=400)
    fixed = [  # each query always shows its first ten documents in the same order
        Session(
            s.query_id, s.user_query, tuple(f"{s.user_query}d{d}" for d in range(10)), s.actions
        )
        for s in randomised
    ]
    settings = TunerSettings(propensity=PropensityKind.em, propensity_min_sessions=10)
    assert varied_share(fixed) == 0.0 and varied_share(randomised) > 0.5
    assert from_settings(settings, fixed) == PowerLawPropensity(eta=1.0)
    assert isinstance(from_settings(settings, randomised), EstimatedPropensity)


@pytest.mark.parametrize("eta", [1.0, 0.6])
def test_a_few_hundred_randomised_sessions_recover_the_curve(eta: float) -> None:
    """The demo's regime: ~120 shuffled sessions a round, each query seen only a few times,
    where EM's per-document attractions overfit but the per-rank click rates do not."""
    sessions = [replace(s, randomized=True) for s in simulated_sessions(eta, sessions=300)]
    fitted = fit_randomized(sessions, {"click": 1.0})
    assert abs(fitted.eta - eta) < 0.25, fitted
    settings = TunerSettings(propensity=PropensityKind.em, propensity_min_randomized=100)
    assert isinstance(from_settings(settings, sessions), PowerLawPropensity)
    unmarked = [replace(s, randomized=False) for s in sessions]
    assert not isinstance(from_settings(settings, unmarked), PowerLawPropensity)
