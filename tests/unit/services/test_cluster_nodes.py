"""`services.opensearch_nodes` / `clicktune services up --nodes N`: one cluster on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.config import LocalServicesSettings, Settings
from clicktune.services import manager
from clicktune.services.opensearch import OpenSearchService, render_config

TWO = LocalServicesSettings(
    opensearch_http_port=29200, opensearch_transport_port=29300, opensearch_nodes=2
)


def _config(node: int) -> dict[str, Any]:
    return yaml.safe_load(render_config(TWO, Path(f"/d{node}"), Path("/l"), node))


def test_every_node_seeds_from_all_and_node_1_bootstraps_the_cluster() -> None:
    first, second = _config(1), _config(2)
    for config in (first, second):
        assert config["discovery.seed_hosts"] == ["127.0.0.1:29300", "127.0.0.1:29301"]
        assert config["cluster.initial_cluster_manager_nodes"] == ["clicktune-local"]
        assert config["cluster.name"] == "clicktune"
        assert "discovery.type" not in config
    assert (first["http.port"], first["transport.port"]) == (29200, 29300)
    assert (second["http.port"], second["transport.port"]) == (29201, 29301)
    assert second["node.name"] == "clicktune-node-2"
    assert second["path.data"] == "/d2"


def test_only_node_1_may_manage_the_cluster_so_losing_another_keeps_it_writable() -> None:
    assert "node.roles" not in _config(1)  # every role, cluster manager included
    assert _config(2)["node.roles"] == ["data", "ingest"]


def test_node_2_has_its_own_folders_ports_heap_and_markers(tmp_path: Path) -> None:
    first, second = (OpenSearchService(TWO, tmp_path, n) for n in (1, 2))
    assert first.data == tmp_path / "data" and first.conf == first.dist / "config"
    assert second.home == tmp_path / "node-2"
    assert (second.data, second.conf) == (tmp_path / "node-2/data", tmp_path / "node-2/config")
    assert second.pid_file == tmp_path / "node-2" / "opensearch.pid"
    assert second.dist == first.dist  # one installed distribution
    assert second.address == "http://127.0.0.1:29201"
    assert second.ports == {"opensearch_http_port": 29201, "opensearch_transport_port": 29301}
    assert f"-Dopensearch.path.conf={second.conf}" in second.markers
    assert second.name == "opensearch-node-2"


def test_local_services_run_the_configured_nodes_and_down_finds_started_ones(
    tmp_path: Path,
) -> None:
    settings = Settings(home=tmp_path, services=TWO)
    names = [s.name for s in manager.local_services(settings)]
    assert names == ["opensearch", "opensearch-node-2", "kafka", "mlflow"]
    pid = tmp_path / "services" / "opensearch" / "node-3" / "opensearch.pid"
    pid.parent.mkdir(parents=True)
    pid.write_text("1")
    one = Settings(home=tmp_path)
    assert [s.name for s in manager.local_services(one)] == ["opensearch", "kafka", "mlflow"]
    found = [s.name for s in manager.local_services(one, started_too=True)]
    assert found == ["opensearch", "opensearch-node-2", "opensearch-node-3", "kafka", "mlflow"]


def test_up_nodes_2_starts_two_opensearch_nodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[str] = []
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    monkeypatch.setattr(
        manager, "up", lambda services, echo, timeout: seen.extend(s.name for s in services)
    )
    result = CliRunner().invoke(app, ["services", "up", "--nodes", "2"])
    assert result.exit_code == 0, result.output
    assert seen == ["opensearch", "opensearch-node-2", "kafka", "mlflow"]
