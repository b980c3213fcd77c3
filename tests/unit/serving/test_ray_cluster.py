"""Reaching a Ray cluster: address rules, and an unreachable address failing fast with the
address and what was tried."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from serving.config import RaySettings
from serving.errors import RayClusterError
from serving.index.ray_cluster import parse_address, ray_cluster, reach


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_addresses_name_the_gcs_or_ray_client_with_their_default_ports() -> None:
    assert parse_address("head.internal") == ("the head's GCS", "head.internal", 6379)
    assert parse_address("10.0.0.5:6380") == ("the head's GCS", "10.0.0.5", 6380)
    assert parse_address("ray://head:10002") == ("Ray Client", "head", 10002)
    assert parse_address("ray://head") == ("Ray Client", "head", 10001)
    with pytest.raises(RayClusterError, match=r"'http://head:8265' must be host:port"):
        parse_address("http://head:8265")
    with pytest.raises(RayClusterError, match=r"port 'x1' is not a port number"):
        parse_address("head:x1")


def test_an_address_where_nothing_listens_fails_at_once_naming_it_and_what_was_tried() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(RayClusterError) as refused:
        reach(f"127.0.0.1:{port}", timeout_s=5)
    assert time.monotonic() - started < 2
    message = str(refused.value)
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in message
    assert f"tried a TCP connection to 127.0.0.1:{port} (the head's GCS)" in message


def test_an_address_where_something_else_listens_fails_within_the_join_timeout() -> None:
    """`ray.init` would retry for minutes against a port that is not Ray's; it runs in a child
    process, so its stuck thread dies with it."""
    pytest.importorskip("ray")
    with socket.socket() as other:  # accepts connections, speaks no Ray
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = f"127.0.0.1:{other.getsockname()[1]}"
        script = (
            "from serving.config import RaySettings\n"
            "from serving.index.ray_cluster import ray_cluster\n"
            f"with ray_cluster(RaySettings(address={address!r}, join_timeout_s=3)):\n"
            "    pass\n"
        )
        started = time.monotonic()
        child = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
    assert time.monotonic() - started < 30
    assert child.returncode == 1
    assert f"RayClusterError: cannot join the Ray cluster at {address!r}" in child.stderr
    assert f"ray.init(address={address!r}) did not finish within 3 s" in child.stderr


def test_ray_init_is_not_called_for_an_unreachable_address(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    calls: list[dict] = []
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    settings = RaySettings(address=f"127.0.0.1:{_closed_port()}", connect_timeout_s=1)
    with pytest.raises(RayClusterError, match="cannot reach"), ray_cluster(settings):
        pass
    assert calls == []
