"""The simulated users' flags of the benches that click (bench/users.py in bench.uplift and
bench.loop): refused when they name no click model or break a rule, today's users by default."""

from __future__ import annotations

import pytest

from bench import loop, uplift
from bench.users import user_model
from tests.unit.bench.test_bench_uplift import DATA, CountingEmbed, options
from tuner.judged import load_collection
from tuner.references import corpus_texts
from tuner.simulator import ClickModel, UserModel

pytestmark = pytest.mark.unit
PARSERS = {"uplift": uplift._parser, "loop": loop._parser}


def _users(bench: str, argv: list[str]) -> UserModel:
    parser = PARSERS[bench]()
    return user_model(parser, parser.parse_args(argv))


@pytest.mark.parametrize("bench", PARSERS)
def test_a_click_model_that_does_not_exist_is_refused_naming_the_choices(
    bench: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        _users(bench, ["--click-model", "pbm"])
    assert caught.value.code == 2
    assert "invalid choice: 'pbm' (choose from 'position', 'cascade', 'dbn')" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("bench", PARSERS)
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--noise", "1.5"], "noise 1.5 must be a probability in [0, 1]"),
        (["--eta", "-2"], "eta -2.0 must be a finite number >= 0"),
        (["--trust-bias", "1.2"], "trust_bias 1.2 must be a probability in [0, 1]"),
    ],
)
def test_user_parameters_outside_their_rules_are_refused_naming_value_and_rule(
    bench: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        _users(bench, argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("bench", PARSERS)
def test_without_flags_the_benches_simulate_the_users_they_always_did(bench: str) -> None:
    assert _users(bench, []) == UserModel(eta=1.0, noise=0.05)


@pytest.mark.parametrize("bench", PARSERS)
def test_the_flags_describe_the_users(bench: str) -> None:
    argv = ["--click-model", "dbn", "--eta", "0.5", "--noise", "0.1", "--trust-bias", "0.3"]
    assert _users(bench, [*argv, "--dbn-continue", "0.7"]) == UserModel(
        ClickModel.dbn, eta=0.5, noise=0.1, trust_bias=0.3, dbn_continue=0.7
    )


def test_uplift_sessions_are_clicked_by_the_users_given() -> None:
    collection = load_collection(DATA)
    texts = corpus_texts(collection)
    everything = UserModel(eta=0.0, noise=1.0)  # examines and clicks every hit shown
    sessions = uplift.simulate_sessions(CountingEmbed(), collection, texts, options(), everything)
    clicks = [sum(a.action_name == "click" for a in s.actions) for s in sessions]
    assert clicks == [10] * len(sessions)
    default = uplift.simulate_sessions(CountingEmbed(), collection, texts, options())
    assert sum(sum(a.action_name == "click" for a in s.actions) for s in default) < sum(clicks) / 3


def test_the_users_are_recorded_in_the_bench_results() -> None:
    parser = uplift._parser()
    args = parser.parse_args(["--click-model", "cascade", "--trust-bias", "0.2"])
    params = uplift.bench_result(_found(), 10, vars(args)).params
    assert params["click_model"] == "cascade" and params["trust_bias"] == 0.2
    measured = {
        "dataset": "toy",
        "docs": 5,
        "sessions": 10,
        "max_steps": 1,
        "status": "done",
        "version": "v2",
        "cpu_count": 2,
        "trigger_to_live_s": 1.0,
        "stages_s": {},
        "setup_s (import + index base, not in the loop)": 1.0,
        "users": UserModel(ClickModel.dbn).config(),
    }
    assert loop.bench_result(measured).params["click_model"] == "dbn"


def _found() -> dict:
    metrics = {"ndcg@10": 0.4, "mrr@10": 0.5, "recall@10": 0.4, "recall@100": 0.8}
    return {name: dict(metrics) for name in ("base", "clicks", "no_ipw", "supervised")}
