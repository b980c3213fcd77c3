"""`clicktune models list` shows which document model a query model searches over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from serving.models.registry import LocalRegistry
from tests.unit.serving.test_serving_rollout_query import model_dir


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    registry = LocalRegistry(tmp_path / "models")
    registry.add(model_dir(tmp_path, "v1"), "v1")
    registry.add(model_dir(tmp_path, "q1", document_model="v1"), "q1")
    registry.set_alias("production", "q1")
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("CLICKTUNE_TUNER__MLFLOW_ENABLED", "false")
    return tmp_path


def test_models_list_shows_a_query_model_over_its_document_model(home: Path) -> None:
    listed = CliRunner().invoke(app, ["models", "list"])
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert "KIND" in header
    lines = {row.split()[0]: row for row in rows}
    assert "query over v1" in lines["q1"] and "production" in lines["q1"]
    assert " text " in lines["v1"] and "over" not in lines["v1"]


def test_models_list_json_carries_the_kind_and_document_model(home: Path) -> None:
    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    rows = {r["version"]: r for r in json.loads(listed.stdout)["versions"]}
    assert (rows["q1"]["kind"], rows["q1"]["document_model"]) == ("query", "v1")
    assert (rows["v1"]["kind"], rows["v1"]["document_model"]) == ("text", None)
