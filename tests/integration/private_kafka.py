"""A Kafka broker of the test's own, to kill and restart without touching the shared one.

A proxy in front of the shared broker cannot take it down for a client: after bootstrap, clients
connect to the address the broker advertises. This one runs from the distribution
`clicktune services up` cached under $CLICKTUNE_HOME (nothing is downloaded), with the same
`KafkaService` code, on free loopback ports and a data folder of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from clicktune.config import LocalServicesSettings, Settings
from clicktune.local_http import free_port
from clicktune.services import preflight
from clicktune.services.errors import StartError
from clicktune.services.kafka import KafkaService
from clicktune.services.process import read_pid, terminate, wait_until

START_TIMEOUT_S = 90.0


class PrivateKafka:
    """One KRaft node under `root`; `kill` / `freeze` take it down, `start` brings it back on the
    same port and data folder."""

    def __init__(self, root: Path, libs: Path) -> None:
        settings = LocalServicesSettings(
            kafka_port=free_port(), kafka_controller_port=free_port(), kafka_heap="256m"
        )
        self.service = KafkaService(settings, root)
        self.service.libs = libs  # the cached jars; config, data and log stay under `root`
        self._java_home = preflight.java_home()
        self.pid: int | None = None

    @property
    def address(self) -> str:
        return self.service.address

    def start(self) -> None:
        """Launch the broker (formatting its storage the first time) and wait until it answers."""
        self.service.launch(self._java_home)
        # The pid file, not `service.pid()`: right after the fork, /proc shows no java yet.
        self.pid = read_pid(self.service.pid_file)
        if not wait_until(self.service.healthy, START_TIMEOUT_S, interval_s=1.0):
            raise StartError(self.service.failure(f"private Kafka at {self.address} not healthy"))

    def kill(self) -> None:
        """SIGKILL: the broker is gone, its port refuses connections."""
        self._signal(signal.SIGKILL)
        wait_until(lambda: not self.service.alive(), 10.0, interval_s=0.1)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and requests get no answer (a hung broker)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
        terminate(self.pid, timeout_s=20.0)
        self.pid = None

    def _signal(self, sig: signal.Signals) -> None:
        assert self.pid is not None, "the private broker is not running"
        os.kill(self.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.service.log_tail(lines))


@pytest.fixture()
def private_kafka(settings: Settings, tmp_path: Path) -> Iterator[PrivateKafka]:
    """A started private broker, stopped at teardown; skips without the cached distribution."""
    libs = (
        settings.home / "services" / "kafka" / f"kafka-{settings.services.kafka_version}" / "libs"
    )
    if not libs.is_dir():
        pytest.skip(f"no cached Kafka distribution at {libs} (run `clicktune services up` once)")
    broker = PrivateKafka(tmp_path / "private-kafka", libs)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
