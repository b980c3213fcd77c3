"""bench/decide's bookkeeping: which decisions are errors, the intervals, the online stage, the CLI.

No model is trained or loaded: rankings are given, and the one offline round embeds the shipped
products-synth collection with a fixed random vector per text.
"""

from __future__ import annotations

import argparse
import zlib

import numpy as np
import pytest

from bench import decide
from bench.decide_models import Vectors, all_texts, with_explored_depth
from bench.decide_online import interleave
from bench.decide_options import collection_path
from bench.decide_table import rate, render, summarise
from tuner.config import TunerSettings
from tuner.judged import load_collection
from tuner.references import corpus_texts
from tuner.simulator import UserModel

pytestmark = pytest.mark.unit
QUERIES = [f"q{i}" for i in range(30)]


def outcome(candidate: str, relative: float, old: bool, verdict: str, online=None, **kw):
    fields = {
        "collection": "c",
        "user": "position",
        "candidate": candidate,
        "seed": 0,
        "relative": relative,
        "old_promoted": old,
        "old_bound": 0.0,
        "verdict": verdict,
        "new_bound": 0.0,
        "online": online,
        "online_searches": 0,
        "round_searches": 100,
        **kw,
    }
    return decide.Outcome(**fields)


@pytest.mark.parametrize(
    ("relative", "kind"),
    [(-0.1, "false_promote"), (0.0, "false_promote"), (0.01, None), (0.02, "false_reject")],
)
def test_a_candidates_true_delta_decides_which_error_it_can_make(relative, kind) -> None:
    assert decide.error_kind(relative) == kind


def test_promoting_an_equal_one_and_rejecting_a_better_one_are_the_errors() -> None:
    assert decide.is_error("false_promote", promoted=True)
    assert not decide.is_error("false_promote", promoted=False)
    assert decide.is_error("false_reject", promoted=False)
    assert not decide.is_error("false_reject", promoted=True)
    assert not decide.is_error(None, promoted=True) and not decide.is_error(None, promoted=False)


def test_the_new_decision_promotes_offline_or_online_only() -> None:
    assert outcome("x", 0.0, False, "promote").new_promoted
    assert outcome("x", 0.0, False, "online", "promote").new_promoted
    assert not outcome("x", 0.0, False, "online", "budget").new_promoted
    assert not outcome("x", 0.0, False, "reject").new_promoted
    assert outcome("x", 0.0, False, "online", "rollback", online_searches=50).new_searches == 150


def test_rates_carry_the_wilson_interval() -> None:
    none = rate(0, 10)
    assert none["rate"] == 0.0 and none["ci95"][0] == 0.0
    assert none["ci95"][1] == pytest.approx(0.2775, abs=1e-4)  # Wilson 95%, 0 of 10
    half = rate(5, 10)
    assert half["ci95"] == [pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4)]
    assert rate(0, 0)["rate"] is None


def test_the_table_counts_each_error_against_the_decisions_that_could_make_it() -> None:
    outcomes = [
        outcome("equal", 0.0, True, "online", "budget"),  # old false promote only
        outcome("equal", 0.0, False, "online", "promote"),  # new false promote only
        outcome("better", 0.1, False, "online", "promote"),  # old false reject only
        outcome("better", 0.1, True, "reject"),  # new false reject only
        outcome("slightly", 0.01, False, "reject"),  # counts for neither
    ]
    rows = {row["candidate"]: row for row in summarise(outcomes)}
    assert (
        rows["equal"]["old_false_promote"]["k"] == 1
        and rows["equal"]["new_false_promote"]["k"] == 1
    )
    assert (
        rows["equal"]["old_false_promote"]["n"] == 2 and rows["equal"]["old_false_reject"]["n"] == 0
    )
    assert (
        rows["better"]["old_false_reject"]["k"] == 1
        and rows["better"]["new_false_reject"]["k"] == 1
    )
    pooled = rows["all"]
    assert (pooled["new_false_promote"]["n"], pooled["new_false_reject"]["n"]) == (2, 2)
    assert pooled["decisions"] == 5 and pooled["verdicts"] == {"online": 3, "reject": 2}
    assert "1/2 = 50%" in render(summarise(outcomes), {})


def test_each_examination_gets_its_own_rows_on_the_same_rounds() -> None:
    outcomes = [
        outcome("better", 0.1, False, "reject"),
        outcome("better", 0.1, False, "online", "promote", examination="cascade", stop=0.6),
    ]
    rows = {(row["examination"], row["candidate"]): row for row in summarise(outcomes)}
    assert rows["position", "all"]["new_false_reject"]["k"] == 1
    assert rows["cascade", "all"]["new_false_reject"]["k"] == 0
    assert rows["cascade", "better"]["stop"]["mean"] == 0.6
    assert rows["position", "better"]["stop"] is None
    assert "| c | position | cascade | better |" in render(summarise(outcomes), {})


def test_the_old_bound_takes_every_session_as_independent() -> None:
    differences = np.array([0.1, 0.3, -0.1, 0.2])
    expected = differences.mean() - 1.281552 * differences.std(ddof=1) / 2
    assert decide.naive_bound(differences, 0.9) == pytest.approx(expected, abs=1e-5)


def tops(good_first: bool) -> dict[str, list[str]]:
    def ranking(q: str) -> list[str]:
        good = [f"{q}-good{i}" for i in range(3)]
        bad = [f"{q}-bad{i}" for i in range(10)]
        return good + bad if good_first else bad + good

    return {q: ranking(q)[:10] for q in QUERIES}


QRELS = {q: {f"{q}-good{i}": 3 for i in range(3)} for q in QUERIES}


def test_the_online_stage_promotes_a_clearly_better_ranking_before_the_budget() -> None:
    action, searches = interleave(tops(False), tops(True), QRELS, UserModel(), 5000, 0)
    assert action == "promote" and searches < 5000


def test_the_online_stage_rolls_back_a_clearly_worse_ranking() -> None:
    action, _ = interleave(tops(True), tops(False), QRELS, UserModel(), 5000, 0)
    assert action == "rollback"


def test_an_identical_ranking_is_not_promoted_within_the_budget() -> None:
    for seed in range(3):
        action, searches = interleave(tops(True), tops(True), QRELS, UserModel(), 1500, seed)
        assert action in ("budget", "rollback")
        assert searches <= 1500


class FakeVectors(Vectors):
    """A fixed random unit vector per text (no model)."""

    @classmethod
    def for_texts(cls, texts: list[str]) -> Vectors:
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        matrix = np.array(rows, dtype=np.float32)
        return cls.of(texts, matrix / np.linalg.norm(matrix, axis=1, keepdims=True))


def test_both_gates_read_one_round_and_call_the_live_model_itself_no_gain() -> None:
    collection = load_collection(collection_path("products-synth"))
    doc_texts = corpus_texts(collection)
    live = FakeVectors.for_texts(all_texts(collection, doc_texts))
    options = argparse.Namespace(users_per_query=2, randomize=0.2, explore_depth=20)
    round_ = decide.offline_round(
        live, collection, doc_texts, options, UserModel(), 0, TunerSettings()
    )
    assert round_.searches == 2 * len(collection.split_queries("train"))
    assert round_.gate.primary_metric == "dr_dcg@10"  # the shuffles carry their depth
    old_promoted, old_bound, decision = decide.judge_offline(round_, live)
    assert not old_promoted and old_bound == 0.0
    assert decision.verdict == "online"  # non-inferior, no strong evidence: the test decides


def test_shuffled_sessions_get_their_depth() -> None:
    from tuner.sessions import Session

    plain = Session("a", "q", ("d1",), ())
    shuffled = Session("b", "q", ("d2",), (), randomized=True)
    labelled = with_explored_depth([plain, shuffled], 20)
    assert labelled[0].explored_depth is None and labelled[1].explored_depth == 20


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--collections", "msmarco"], "products-synth"),
        (["--candidates", "noise-x"], "noise-<scale>"),
        (["--candidates", "better"], "supervised"),
        (["--click-model", "random"], "cascade"),
        (["--users-per-query", "0"], "must be >= 1"),
        (["--budget", "0"], "must be >= 1"),
        (["--randomize", "2"], "[0, 1]"),
        (["--examination", "dbn"], "cascade"),
        (["--noninferiority-margin", "1.5"], "[0, 1)"),
    ],
)
def test_bad_options_are_refused_naming_the_rule(argv, named, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        decide.main(argv)
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err


def test_the_margin_option_reaches_the_offline_gate_and_its_absence_keeps_the_setting() -> None:
    settings = TunerSettings()
    parse = decide.build_parser("t").parse_args
    gate = decide.offline_gate(settings, parse(["--noninferiority-margin", "0.05"]), "cascade")
    assert (gate.noninferiority_margin, gate.examination.value) == (0.05, "cascade")
    kept = decide.offline_gate(settings, parse([]), "position")
    assert kept.noninferiority_margin == settings.gate.noninferiority_margin
