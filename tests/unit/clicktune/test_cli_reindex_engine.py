"""`clicktune reindex --engine local|ray`: the options over the configuration, and an
unreachable `--ray-address` failing before any model loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.cli.index import with_engine
from clicktune.config import load_settings
from serving.config import ReindexEngine
from tests.unit.serving.test_ray_cluster import _closed_port


def test_the_command_line_chooses_the_engine_over_the_configuration() -> None:
    settings = with_engine(load_settings(), ReindexEngine.ray, "head:6379", 4)
    reindex = settings.serving.reindex
    assert (reindex.engine, reindex.ray.address, reindex.ray.actors) == (
        ReindexEngine.ray,
        "head:6379",
        4,
    )
    assert with_engine(load_settings(), None).serving.reindex.engine is ReindexEngine.local


def test_reindex_on_an_unreachable_ray_address_exits_before_loading_a_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if "ray" not in sys.modules:
        pytest.importorskip("ray")
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))  # no model registered: never reached
    address = f"127.0.0.1:{_closed_port()}"
    args = ["reindex", "--model", "v2", "--engine", "ray", "--ray-address", address]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert f"error: cannot reach the Ray cluster at {address!r}" in result.output
    assert "no model registered" not in result.output and "Traceback" not in result.output
