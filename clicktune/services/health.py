"""Health probes for OpenSearch, Kafka and MLflow: local or remote, quick, and never raising."""

from __future__ import annotations

import socket
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from kafka.errors import KafkaConfigurationError, KafkaError

HEALTHY_STATES = ("green", "yellow")


@dataclass(frozen=True)
class OpenSearchStatus:
    """What `services status` reports about OpenSearch."""

    url: str
    healthy: bool
    version: str = ""
    plugins: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KafkaStatus:
    """What `services status` reports about Kafka."""

    bootstrap: str
    healthy: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MlflowStatus:
    """What `services status` reports about the MLflow tracking server."""

    url: str
    healthy: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mlflow_healthy(url: str, timeout_s: float = 2.0) -> bool:
    """True when the tracking server at `url` answers `GET /health` with 200."""
    try:
        return httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def opensearch_healthy(url: str, timeout_s: float = 2.0) -> bool:
    """True when `url/_cluster/health` answers green or yellow (plain HTTP, no auth)."""
    try:
        response = httpx.get(f"{url}/_cluster/health", timeout=timeout_s)
        return response.status_code == 200 and response.json().get("status") in HEALTHY_STATES
    except (httpx.HTTPError, ValueError):
        return False


def opensearch_status(client: Any, url: str) -> OpenSearchStatus:
    """Version, health and installed plugins (as `_cat/plugins` names them) via `client`."""
    from opensearchpy.exceptions import OpenSearchException

    try:
        health = client.cluster.health()
        version = client.info()["version"]["number"]
        rows = client.cat.plugins(format="json")
    except (OpenSearchException, OSError, KeyError):
        return OpenSearchStatus(url=url, healthy=False)
    plugins = sorted({row["component"] for row in rows})
    healthy = health.get("status") in HEALTHY_STATES
    return OpenSearchStatus(url=url, healthy=healthy, version=version, plugins=plugins)


def tcp_open(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when a TCP connection to `host:port` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_healthy(options: dict[str, Any], timeout_s: float = 5.0) -> bool:
    """True when a Kafka admin client connects with `options` and lists the topics."""
    from kafka import KafkaAdminClient

    servers = options["bootstrap_servers"]
    # Without a listener the admin client would spend its whole timeout retrying: check first.
    if not any(tcp_open(*_host_port(server)) for server in servers):
        return False
    timeout_ms = int(timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            **options, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
        )
    except KafkaConfigurationError:
        raise  # a bug in the options, not a broker that is down
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port or 9092)
