"""The local MLflow tracking server: its command line, place in `up`, and status."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.config import LocalServicesSettings, Settings
from clicktune.local_http import free_port
from clicktune.services import manager, preflight
from clicktune.services.errors import PrerequisiteError
from clicktune.services.health import KafkaStatus, MlflowStatus, OpenSearchStatus
from clicktune.services.mlflow import MlflowService
from clicktune.services.process import is_ours
from serving.models.registry_config import RegistrySettings
from tests.unit.services.test_manager import FakeService


def test_the_server_runs_on_this_python_with_its_store_and_artifacts_under_root(
    tmp_path: Path,
) -> None:
    service = MlflowService(LocalServicesSettings(mlflow_port=5123), tmp_path / "mlflow")
    command = service.command()
    assert command[:4] == [sys.executable, "-m", "mlflow", "server"]
    options = dict(zip(command[4::2], command[5::2], strict=True))
    assert options == {
        "--backend-store-uri": f"sqlite:///{(tmp_path / 'mlflow' / 'mlflow.db').resolve()}",
        "--artifacts-destination": str((tmp_path / "mlflow" / "artifacts").resolve()),
        "--host": "127.0.0.1",
        "--port": "5123",
        "--workers": "1",
    }
    assert service.address == "http://127.0.0.1:5123"
    assert service.ports == {"mlflow_port": 5123}


def test_only_a_python_process_with_the_servers_store_is_ours(tmp_path: Path) -> None:
    service = MlflowService(LocalServicesSettings(), tmp_path)
    assert is_ours(service.command(), service.markers, program="python")
    other = MlflowService(LocalServicesSettings(), tmp_path / "elsewhere")
    assert not is_ours(other.command(), service.markers, program="python")
    assert not is_ours(["/usr/bin/java", *service.command()[1:]], service.markers, "python")


def test_up_and_down_manage_mlflow_after_opensearch_and_kafka(tmp_path: Path) -> None:
    services = manager.local_services(Settings(home=tmp_path))
    assert [s.name for s in services] == ["opensearch", "kafka", "mlflow"]
    assert services[-1].root == tmp_path / "services" / "mlflow"
    assert [s.needs_java for s in services] == [True, True, False]


def test_starting_only_mlflow_needs_neither_java_nor_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise PrerequisiteError("java is not on PATH")

    monkeypatch.setattr(preflight, "java_home", missing)
    healthy = FakeService("opensearch", tmp_path, True)
    mlflow = FakeService("mlflow", tmp_path, False)
    mlflow.needs_java = False
    assert manager.up([healthy, mlflow], echo=lambda _: None, timeout_s=5)
    assert mlflow.calls == ["launch"]
    java = FakeService("kafka", tmp_path, False)
    with pytest.raises(PrerequisiteError, match="java"):
        manager.up([java], echo=lambda _: None, timeout_s=5)


def test_a_missing_mlflow_package_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a free port: `up` skips a service that answers, and `clicktune services up` (CI, a demo)
    # runs MLflow on the default one
    service = MlflowService(LocalServicesSettings(mlflow_port=free_port()), tmp_path)
    monkeypatch.setattr(service, "installed", lambda: False)
    with pytest.raises(PrerequisiteError, match=r"clicktune\[tuner\]"):
        manager.up([service], echo=lambda _: None, timeout_s=5)


def test_status_names_the_configured_mlflow_else_the_local_one(tmp_path: Path) -> None:
    local = Settings(home=tmp_path, services=LocalServicesSettings(mlflow_port=5123))
    assert manager.mlflow_url(local) == "http://127.0.0.1:5123"
    remote = local.model_copy(
        update={"registry": RegistrySettings(mlflow_url="https://mlflow.internal/")}
    )
    assert manager.mlflow_url(remote) == "https://mlflow.internal"


@pytest.mark.parametrize(("backend", "code"), [("local", 0), ("mlflow", 1)])
def test_a_down_mlflow_fails_status_only_when_it_is_the_registry(
    monkeypatch: pytest.MonkeyPatch, backend: str, code: int
) -> None:
    reports = (
        OpenSearchStatus(url="http://os:9200", healthy=True),
        KafkaStatus(bootstrap="k:9092", healthy=True),
        MlflowStatus(url="http://127.0.0.1:5000", healthy=False),
    )
    monkeypatch.setattr(manager, "status", lambda settings: reports)
    monkeypatch.setenv("CLICKTUNE_REGISTRY__BACKEND", backend)
    result = CliRunner().invoke(app, ["services", "status", "--json"])
    assert result.exit_code == code
    assert json.loads(result.stdout)["mlflow"] == {"url": "http://127.0.0.1:5000", "healthy": False}
