"""`clicktune services up/status/down` end to end, on free ports in a temporary $CLICKTUNE_HOME.

Non-default ports keep it clear of the dev servers (19200/19092) and of a CI instance on
9200/9092. Maven's ~/.m2 is shared, so after the first run the fetch is a local copy.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clicktune.services.process import cmdline, read_pid

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    http, transport, kafka, controller, mlflow = _free_ports(5)
    return {
        **os.environ,
        "CLICKTUNE_HOME": str(tmp_path / "home"),
        "CLICKTUNE_SERVICES__OPENSEARCH_HTTP_PORT": str(http),
        "CLICKTUNE_SERVICES__OPENSEARCH_TRANSPORT_PORT": str(transport),
        "CLICKTUNE_SERVICES__KAFKA_PORT": str(kafka),
        "CLICKTUNE_SERVICES__KAFKA_CONTROLLER_PORT": str(controller),
        "CLICKTUNE_SERVICES__MLFLOW_PORT": str(mlflow),
        "CLICKTUNE_OPENSEARCH__URL": f"http://127.0.0.1:{http}",
        "CLICKTUNE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka}",
    }


def _services(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clicktune", "services", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_up_status_up_again_down(env: dict[str, str]) -> None:
    services_dir = Path(env["CLICKTUNE_HOME"]) / "services"
    try:
        first = _services(env, "up")
        assert first.returncode == 0, first.stderr
        assert "opensearch healthy after" in first.stdout
        assert "kafka healthy after" in first.stdout
        assert "mlflow healthy after" in first.stdout
        print(first.stdout)

        status = _services(env, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["opensearch"]["healthy"] and report["kafka"]["healthy"]
        assert report["mlflow"] == {
            "url": f"http://127.0.0.1:{env['CLICKTUNE_SERVICES__MLFLOW_PORT']}",
            "healthy": True,
        }
        assert report["opensearch"]["version"] == "2.19.1"
        plugins = set(report["opensearch"]["plugins"])
        assert {"opensearch-knn", "opensearch-ml", "opensearch-neural-search"} <= plugins

        again = _services(env, "up")
        assert again.returncode == 0, again.stderr
        assert "nothing changed" in again.stdout
        assert f"opensearch already running at {env['CLICKTUNE_OPENSEARCH__URL']}" in again.stdout

        pids = [
            read_pid(services_dir / "opensearch" / "opensearch.pid"),
            read_pid(services_dir / "kafka" / "kafka.pid"),
        ]
        assert all(pid is not None for pid in pids)
        stopped = _services(env, "down")
        assert "stopped opensearch" in stopped.stdout and "stopped kafka" in stopped.stdout
        assert "stopped mlflow" in stopped.stdout
        # A stopped server may linger as a zombie until init reaps it: no command line then.
        assert all(cmdline(pid) == [] for pid in pids if pid is not None)

        after = _services(env, "status", "--json")
        assert after.returncode == 1
        report = json.loads(after.stdout)
        assert not report["opensearch"]["healthy"] and not report["kafka"]["healthy"]
    finally:
        _services(env, "down")
