"""`up` and `down` for the local services: start only what is down, stop only what we started.

OpenSearch and Kafka run on Java from Maven Central; the MLflow tracking server runs on this
environment's Python (`needs_java` False), so starting it alone needs neither Java nor Maven."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from clicktune import clients
from clicktune.clients import kafka_options, opensearch_client
from clicktune.config import Settings
from clicktune.services import preflight
from clicktune.services.errors import StartError
from clicktune.services.fetch import Maven
from clicktune.services.health import (
    KafkaStatus,
    MlflowStatus,
    OpenSearchStatus,
    kafka_healthy,
    mlflow_healthy,
    opensearch_status,
)
from clicktune.services.kafka import KafkaService
from clicktune.services.mlflow import MlflowService
from clicktune.services.opensearch import OpenSearchService
from clicktune.services.process import check_ports_free, terminate
from serving.models.registry_config import RegistryBackend

Echo = Callable[[str], None]
STOP_TIMEOUT_S = 60.0


class LocalService(Protocol):
    """One server `clicktune services` manages (OpenSearch, Kafka or MLflow)."""

    name: str
    needs_java: bool
    root: Path
    pid_file: Path

    @property
    def address(self) -> str: ...
    @property
    def ports(self) -> dict[str, int]: ...
    def installed(self) -> bool: ...
    def fetch(self, maven: Maven | None) -> str: ...
    def install(self, java_home: Path | None) -> None: ...
    def launch(self, java_home: Path | None) -> None: ...
    def healthy(self) -> bool: ...
    def alive(self) -> bool: ...
    def pid(self) -> int | None: ...
    def log_tail(self, lines: int) -> list[str]: ...
    def failure(self, what: str, lines: int = 20) -> str: ...


def local_services(settings: Settings, started_too: bool = False) -> list[LocalService]:
    """The services `up` manages, cached under `$CLICKTUNE_HOME/services/`: the OpenSearch
    nodes (`services.opensearch_nodes`; with `started_too`, also any other node that has a pid
    file, so `down` stops what an earlier `up --nodes N` started), then Kafka, then MLflow."""
    root = settings.home / "services" / "opensearch"
    nodes = settings.services.opensearch_nodes
    if started_too:
        started = [int(p.parent.name.split("-")[1]) for p in root.glob("node-*/opensearch.pid")]
        nodes = max([nodes, *started])
    opensearch: list[LocalService] = [
        OpenSearchService(settings.services, root, node) for node in range(1, nodes + 1)
    ]
    home = settings.home / "services"
    return [
        *opensearch,
        KafkaService(settings.services, home / "kafka"),
        MlflowService(settings.services, home / "mlflow"),
    ]


def up(services: Sequence[LocalService], echo: Echo, timeout_s: float) -> bool:
    """Start the services that are not healthy and wait for them; False when none needed it."""
    pending = []
    for service in services:
        if service.healthy():
            echo(f"{service.name} already running at {service.address}")
        else:
            pending.append(service)
    if not pending:
        echo("nothing changed: all services were already running")
        return False
    java_home = None
    if any(service.needs_java for service in pending):
        java_home = preflight.java_home()
        preflight.check_memory()
    for service in pending:
        _prepare(service, java_home, echo)
    started = {}
    for service in pending:
        pid = service.pid()
        if pid is not None:
            echo(f"{service.name} is already starting (pid {pid}); waiting for it")
        else:
            service.launch(java_home)
        started[service.name] = time.monotonic()
    _wait_healthy(pending, started, echo, timeout_s)
    return True


def _prepare(service: LocalService, java_home: Path | None, echo: Echo) -> None:
    if service.pid() is None:
        check_ports_free(service.ports, service.name)
    if service.installed():
        return
    preflight.check_disk(service.root)
    maven = Maven(preflight.maven()) if service.needs_java else None
    t0 = time.monotonic()
    what = service.fetch(maven)
    echo(f"fetched {what} in {time.monotonic() - t0:.1f} s")
    t0 = time.monotonic()
    service.install(java_home)
    if (spent := time.monotonic() - t0) >= 0.1:
        echo(f"installed {service.name} in {spent:.1f} s")


def _wait_healthy(
    services: Sequence[LocalService], started: dict[str, float], echo: Echo, timeout_s: float
) -> None:
    waiting = list(services)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for service in list(waiting):
            if service.healthy():
                spent = time.monotonic() - started[service.name]
                echo(f"{service.name} healthy after {spent:.1f} s at {service.address}")
                waiting.remove(service)
            elif not service.alive():
                raise StartError(service.failure(f"{service.name} exited during start"))
        if waiting and time.monotonic() > deadline:
            service = waiting[0]
            raise StartError(
                service.failure(
                    f"{service.name} was not healthy at {service.address} within {timeout_s:.0f} s "
                    "(services.start_timeout_s)"
                )
            )
        if waiting:
            time.sleep(1.0)


def down(services: Sequence[LocalService], echo: Echo) -> list[str]:
    """Stop the processes `up` started (pid file + command line match); return their names."""
    stopped = []
    for service in services:
        pid = service.pid()
        if pid is None:
            stale = service.pid_file.exists()
            service.pid_file.unlink(missing_ok=True)
            note = " (removed a stale pid file)" if stale else ""
            echo(f"{service.name} was not running (no process started by clicktune){note}")
            continue
        t0 = time.monotonic()
        killed = terminate(pid, STOP_TIMEOUT_S)
        service.pid_file.unlink(missing_ok=True)
        how = "killed after SIGTERM timed out" if killed else "stopped"
        echo(f"{how} {service.name} (pid {pid}) in {time.monotonic() - t0:.1f} s")
        stopped.append(service.name)
    return stopped


def status(settings: Settings) -> tuple[OpenSearchStatus, KafkaStatus, MlflowStatus]:
    """Health of the OpenSearch, Kafka and MLflow clicktune is configured to use (local or
    remote)."""
    client = opensearch_client(settings.opensearch, timeout=5, max_retries=0)
    os_status = opensearch_status(client, settings.opensearch.url)
    kafka = KafkaStatus(
        bootstrap=settings.kafka.bootstrap_servers,
        healthy=kafka_healthy(kafka_options(settings.kafka)),
    )
    url = mlflow_url(settings)
    return os_status, kafka, MlflowStatus(url=url, healthy=mlflow_healthy(url))


def needs_mlflow(settings: Settings) -> bool:
    """Whether clicktune needs the MLflow server to run: only as its model registry."""
    return settings.registry.backend == RegistryBackend.mlflow


def mlflow_url(settings: Settings) -> str:
    """The MLflow tracking server clicktune uses: `registry.mlflow_url`, else the local one of
    `services up`."""
    return clients.mlflow_url(settings)
