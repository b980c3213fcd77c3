from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from clicktune.config import LocalServicesSettings
from clicktune.services import manager, preflight
from clicktune.services.errors import PortTakenError
from clicktune.services.fetch import Maven
from clicktune.services.kafka import KafkaService


class FakeService:
    """A service whose health and lifecycle the test controls; records what `up` did to it."""

    def __init__(self, name: str, root: Path, healthy: bool, port: int = 1) -> None:
        self.name = name
        self.needs_java = True
        self.root = root
        self.pid_file = root / f"{name}.pid"
        self.is_healthy = healthy
        self.port = port
        self.calls: list[str] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ports(self) -> dict[str, int]:
        return {f"{self.name}_port": self.port}

    def installed(self) -> bool:
        return True

    def fetch(self, maven: Maven) -> str:
        self.calls.append("fetch")
        return self.name

    def install(self, java_home: Path) -> None:
        self.calls.append("install")

    def launch(self, java_home: Path) -> None:
        self.calls.append("launch")
        self.is_healthy = True

    def healthy(self) -> bool:
        return self.is_healthy

    def alive(self) -> bool:
        return True

    def pid(self) -> int | None:
        return None

    def log_tail(self, lines: int) -> list[str]:
        return []

    def failure(self, what: str, lines: int = 20) -> str:
        return what


@pytest.fixture(autouse=True)
def _no_real_prerequisites(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "java_home", lambda: Path("/jdk"))
    monkeypatch.setattr(preflight, "check_memory", lambda: None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_with_everything_healthy_changes_nothing_and_says_so(tmp_path: Path) -> None:
    services = [FakeService("opensearch", tmp_path, True), FakeService("kafka", tmp_path, True)]
    lines: list[str] = []
    assert manager.up(services, lines.append, timeout_s=5) is False
    assert lines == [
        "opensearch already running at 127.0.0.1:1",
        "kafka already running at 127.0.0.1:1",
        "nothing changed: all services were already running",
    ]
    assert all(s.calls == [] for s in services)


def test_up_starts_only_the_service_that_is_down(tmp_path: Path) -> None:
    opensearch = FakeService("opensearch", tmp_path, True)
    kafka = FakeService("kafka", tmp_path, False, port=_free_port())
    lines: list[str] = []
    assert manager.up([opensearch, kafka], lines.append, timeout_s=5) is True
    assert opensearch.calls == []
    assert kafka.calls == ["launch"]
    assert lines[-1].startswith("kafka healthy after ")


def test_up_refuses_a_port_held_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        kafka = FakeService("kafka", tmp_path, False, port=sock.getsockname()[1])
        with pytest.raises(PortTakenError, match="services.kafka_port"):
            manager.up([kafka], lambda _: None, timeout_s=5)
    assert kafka.calls == []


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        service = KafkaService(LocalServicesSettings(), tmp_path / "kafka")
        service.pid_file.parent.mkdir(parents=True)
        service.pid_file.write_text(str(stranger.pid))
        lines: list[str] = []
        assert manager.down([service], lines.append) == []
        assert stranger.poll() is None
        assert "kafka was not running" in lines[0] and "stale pid file" in lines[0]
        assert not service.pid_file.exists()
    finally:
        stranger.kill()
        stranger.wait()
