"""The local MLflow tracking server of `clicktune services`: up, status --json, down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from clicktune.services import manager
from clicktune.services.process import cmdline, port_in_use
from tests.integration.mlflow_server import start_mlflow

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_up_serves_the_registry_api_status_reports_it_and_down_stops_every_worker(
    tmp_path: Path,
) -> None:
    service = start_mlflow(tmp_path / "mlflow")
    try:
        pid = service.pid()
        assert pid is not None
        workers = _children(pid)
        assert workers, "mlflow server runs its API in a uvicorn child process"
        # The registry API and the artifact proxy answer; the store and artifacts are ours.
        api = f"{service.address}/api/2.0"
        created = httpx.post(f"{api}/mlflow/registered-models/create", json={"name": "probe"})
        assert created.status_code == 200, created.text
        put = httpx.put(f"{api}/mlflow-artifacts/artifacts/probe/file.txt", content=b"hello")
        assert put.status_code == 200, put.text
        assert (tmp_path / "mlflow" / "artifacts" / "probe" / "file.txt").read_bytes() == b"hello"
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()

        env = {
            **os.environ,
            "CLICKTUNE_HOME": str(tmp_path / "home"),
            "CLICKTUNE_SERVICES__MLFLOW_PORT": str(service.settings.mlflow_port),
        }
        status = subprocess.run(
            [sys.executable, "-m", "clicktune", "services", "status", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        report = json.loads(status.stdout)
        assert report["mlflow"] == {"url": service.address, "healthy": True}
    finally:
        stopped = manager.down([service], echo=print)
    assert stopped == ["mlflow"]
    assert cmdline(pid) == [] and all(cmdline(w) == [] for w in workers)
    assert not port_in_use(service.settings.mlflow_port)
