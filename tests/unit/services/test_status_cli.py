from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.services.health import kafka_healthy, opensearch_healthy


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_status_json_reports_unreachable_services_as_down(monkeypatch: pytest.MonkeyPatch) -> None:
    url, bootstrap = f"http://127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    monkeypatch.setenv("CLICKTUNE_OPENSEARCH__URL", url)
    monkeypatch.setenv("CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS", bootstrap)
    mlflow = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("CLICKTUNE_REGISTRY__MLFLOW_URL", mlflow)
    result = CliRunner().invoke(app, ["services", "status", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "opensearch": {"url": url, "healthy": False, "version": "", "plugins": []},
        "kafka": {"bootstrap": bootstrap, "healthy": False},
        "mlflow": {"url": mlflow, "healthy": False},
    }


def test_a_listener_that_is_not_kafka_or_opensearch_is_unhealthy_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        t0 = time.monotonic()
        assert not kafka_healthy({"bootstrap_servers": [f"127.0.0.1:{port}"]}, timeout_s=1.0)
        assert not opensearch_healthy(f"http://127.0.0.1:{port}", timeout_s=1.0)
        assert time.monotonic() - t0 < 10


def test_logs_without_a_log_says_how_to_get_one(tmp_home: Path) -> None:
    result = CliRunner().invoke(app, ["services", "logs", "kafka", "--lines", "5"])
    assert result.exit_code == 0
    assert "==> kafka <==" in result.stdout
    assert "run `clicktune services up`" in result.stdout
