"""A real MLflow tracking server for the tests, started and stopped by the services code.

It runs on a free loopback port with its SQLite store and artifact folder under a temporary
directory, exactly as `clicktune services up` runs the local one.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from clicktune.config import LocalServicesSettings
from clicktune.services import manager
from clicktune.services.mlflow import MlflowService

START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mlflow(root: Path) -> MlflowService:
    """Start an MLflow server under `root` on a free port; wait until it answers /health."""
    service = MlflowService(LocalServicesSettings(mlflow_port=free_port()), root)
    manager.up([service], echo=print, timeout_s=START_TIMEOUT_S)
    return service


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowService]:
    """One MLflow server for the test session; stopped (with its workers) at the end."""
    service = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    try:
        yield service
    finally:
        manager.down([service], echo=print)
