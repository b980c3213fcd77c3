"""Connect to the Ray cluster of `serving.reindex.ray`: a local one started here, or an existing
one (a `ray start --head` cluster, KubeRay) by address; Ray is imported only when asked for.

An address is checked with one TCP connection, bounded by `connect_timeout_s`, before
`ray.init` is called, and `ray.init` itself is given `join_timeout_s`: on an address where
nothing listens, or something other than Ray does, it retries for minutes, and the user should
hear at once which address failed and what was tried.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from serving.config import RaySettings
from serving.errors import RayClusterError

__all__ = ["import_ray", "parse_address", "ray_cluster", "reach"]

log = logging.getLogger(__name__)

GCS_PORT = 6379  # `ray start --head`'s default
CLIENT_PORT = 10001  # Ray Client's default (ray://)


def import_ray() -> ModuleType:
    """The `ray` module; `RayClusterError` naming the extra when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise RayClusterError(
            f"--engine ray needs Ray, which is not installed ({exc}); "
            "install the extra: pip install 'clicktune[scale]'"
        ) from exc
    return ray


def parse_address(address: str) -> tuple[str, str, int]:
    """(what listens there, host, port) of `host[:port]` (a head's GCS) or
    `ray://host[:port]` (Ray Client)."""
    kind, rest, port = "the head's GCS", address, GCS_PORT
    if address.startswith("ray://"):
        kind, rest, port = "Ray Client", address[len("ray://") :], CLIENT_PORT
    elif "://" in address:
        raise RayClusterError(
            f"Ray address {address!r} must be host:port (the head's GCS, port {GCS_PORT} by "
            f"default) or ray://host:port (Ray Client, {CLIENT_PORT}); not a URL of another scheme"
        )
    host, colon, port_text = rest.rstrip("/").rpartition(":")
    if not colon:
        host = rest.rstrip("/")
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise RayClusterError(f"Ray address {address!r}: port {port_text!r} is not a port number")
    if not host:
        raise RayClusterError(f"Ray address {address!r} names no host")
    return kind, host, port


def reach(address: str, timeout_s: float) -> None:
    """Refuse `address` unless something accepts a TCP connection on it within `timeout_s`."""
    kind, host, port = parse_address(address)
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise RayClusterError(
            f"cannot reach the Ray cluster at {address!r}: tried a TCP connection to "
            f"{host}:{port} ({kind}) for up to {timeout_s:g} s: {exc}. Start a cluster there "
            "(`ray start --head`), correct --ray-address / serving.reindex.ray.address, or "
            "leave the address out to start a local cluster"
        ) from exc


@contextmanager
def ray_cluster(settings: RaySettings) -> Iterator[ModuleType]:
    """`ray`, connected: to `settings.address`, or to a local cluster started here (shut down
    on exit; a cluster this process had already joined is left as it is)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options = {"logging_level": logging.WARNING, "log_to_driver": False}
    if settings.address is None:
        ray.init(num_cpus=settings.local_cpus, include_dashboard=False, **options)
        log.info("started a local Ray cluster: %s", ray.cluster_resources())
    else:
        if settings.address != "auto":  # "auto": the cluster `ray start` left on this host
            reach(settings.address, settings.connect_timeout_s)
        _join(ray, settings.address, settings.join_timeout_s, **options)
    try:
        yield ray
    finally:
        ray.shutdown()


def _join(ray: ModuleType, address: str, timeout_s: float, **options: object) -> None:
    """`ray.init(address=...)`, given up after `timeout_s`: where something other than Ray
    accepts the connection, `ray.init` retries for minutes (its thread is left to the exit)."""
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, **options)
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    joining = threading.Thread(target=init, name="ray-init", daemon=True)
    joining.start()
    joining.join(timeout_s)
    tried = f"ray.init(address={address!r})"
    if joining.is_alive():
        raise RayClusterError(
            f"cannot join the Ray cluster at {address!r}: a TCP connection succeeded, but "
            f"{tried} did not finish within {timeout_s:g} s; is it Ray's GCS port (6379) or "
            "Ray Client's (ray://, 10001)?"
        )
    if failure:
        raise RayClusterError(
            f"cannot join the Ray cluster at {address!r}: {tried} failed: {failure[0]}"
        ) from failure[0]
