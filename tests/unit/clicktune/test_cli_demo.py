"""`clicktune demo`'s simulated-user flags: refused before anything starts when they name no click
model or break a rule, and recorded in report.json when the run goes ahead."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.demo.loop import DemoOptions, RoundResult
from clicktune.demo.namespace import new_run_id
from tuner.simulator import ClickModel, UserModel

pytestmark = pytest.mark.unit
METRICS = {"ndcg@10": 0.6, "mrr@10": 0.7, "recall@100": 0.9}


@pytest.fixture
def no_services(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each start of the local services instead of starting them."""
    started: list[str] = []
    monkeypatch.setattr("clicktune.services.manager.up", lambda *a, **k: started.append("up"))
    monkeypatch.setattr("clicktune.demo.processes.interrupt_on_sigterm", lambda: None)
    return started


def test_a_click_model_that_does_not_exist_is_refused_naming_the_choices(
    tmp_path: Path, no_services: list[str]
) -> None:
    args = ["demo", "--click-model", "pbm", "--report", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # typer's error box unwrapped
    assert result.exit_code == 2
    assert "'pbm' is not one of 'position', 'cascade', 'dbn'" in result.output
    assert no_services == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--noise", "1.5"], "noise 1.5 must be a probability in [0, 1]"),
        (["--eta", "-1"], "eta -1.0 must be a finite number >= 0"),
        (["--trust-bias", "2"], "trust_bias 2.0 must be a probability in [0, 1]"),
        (["--dbn-continue", "-0.1"], "dbn_continue -0.1 must be a probability in [0, 1]"),
    ],
)
def test_user_parameters_outside_their_rules_are_refused_before_services_start(
    tmp_path: Path, no_services: list[str], flags: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["demo", *flags, "--report", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"error: {message}" in result.output
    assert no_services == [] and not (tmp_path / "out").exists()


class FakeLoop:
    """Stands in for ClosedLoop: keeps the options it was given and runs one base round."""

    seen: list[DemoOptions] = []

    def __init__(self, options: DemoOptions, *args: Any, **kwargs: Any) -> None:
        FakeLoop.seen.append(options)
        self.collection = type("Collection", (), {"name": "products-synth"})()
        self.run_id = "demo-test"

    def run(self) -> list[RoundResult]:
        return [RoundResult(0, "base", METRICS)]


def _run_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str]) -> dict:
    FakeLoop.seen = []
    monkeypatch.setattr("clicktune.demo.loop.ClosedLoop", FakeLoop)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["demo", "--no-references", "--report", str(out), *flags])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text())


def test_the_user_flags_reach_the_simulator_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_services: list[str]
) -> None:
    flags = ["--click-model", "dbn", "--noise", "0.1", "--trust-bias", "0.3"]
    report = _run_demo(tmp_path, monkeypatch, [*flags, "--dbn-continue", "0.7"])
    user = FakeLoop.seen[0].user
    assert user == UserModel(ClickModel.dbn, noise=0.1, trust_bias=0.3, dbn_continue=0.7)
    assert report["users"] == user.config()
    assert report["users"]["click_model"] == "dbn"
    assert (
        "Simulated users: click_model dbn, eta 1.0" in (tmp_path / "out" / "report.md").read_text()
    )


def test_without_user_flags_the_demo_simulates_the_users_it_always_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_services: list[str]
) -> None:
    report = _run_demo(tmp_path, monkeypatch, [])
    default = DemoOptions(Path("."), 1, Path(".")).user
    assert FakeLoop.seen[0].user == default == UserModel(eta=1.0, noise=0.05)
    assert report["users"]["click_model"] == "position" and report["users"]["trust_bias"] == 0.0


def test_the_seed_reaches_the_loop_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_services: list[str]
) -> None:
    report = _run_demo(tmp_path, monkeypatch, ["--seed", "3"])
    assert FakeLoop.seen[0].seed == 3
    assert report["seed"] == 3
    assert "; seed 3." in (tmp_path / "out" / "report.md").read_text()


def test_the_seed_seeds_the_tuner_workers_training_and_splits() -> None:
    from clicktune.demo.loop import namespace_env

    env = namespace_env("demo-x", Path("/tmp/home"), seed=4)
    assert env["CLICKTUNE_TUNER__TRAIN__SEED"] == "4"
    assert env["CLICKTUNE_TUNER__BATCHES__SEED"] == "4"


@pytest.mark.parametrize("method", ["query_adapter", "query_tower"])
def test_the_method_reaches_the_tuner_and_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_services: list[str], method: str
) -> None:
    from clicktune.demo.loop import namespace_env
    from tuner.config import TrainMethod

    report = _run_demo(tmp_path, monkeypatch, ["--method", method])
    assert FakeLoop.seen[0].method == TrainMethod(method)
    assert report["method"] == method
    assert _run_demo(tmp_path, monkeypatch, [])["method"] == "full"
    env = namespace_env("demo-x", Path("/tmp/home"), method=TrainMethod(method))
    assert env["CLICKTUNE_TUNER__TRAIN__METHOD"] == method


def test_a_method_that_does_not_exist_is_refused_naming_the_choices(
    tmp_path: Path, no_services: list[str]
) -> None:
    args = ["demo", "--method", "query_wizard", "--report", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "query_tower" in result.output and "query_wizard" in result.output
    assert no_services == [] and not (tmp_path / "out").exists()


def test_runs_started_in_the_same_second_get_their_own_namespace() -> None:
    # Two seeds started side by side shared one run id (the UTC second) and so one document
    # alias, topics and indices: each run's promotions moved the other's alias.
    ids = {new_run_id("Products Synth") for _ in range(20)}
    assert len(ids) == 20
    for run_id in ids:
        assert run_id.startswith("demo-products-synth-") and run_id == run_id.lower()
