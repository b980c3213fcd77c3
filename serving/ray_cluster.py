"""Connect to the Ray cluster of `serving.reindex.ray`: a local one started here, or an existing
one (a `ray start --head` cluster, KubeRay) by address; Ray is imported only when asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from serving.config import RaySettings
from serving.errors import RayClusterError

__all__ = ["import_ray", "ray_cluster"]

log = logging.getLogger(__name__)


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
        ray.init(address=settings.address, **options)
    try:
        yield ray
    finally:
        ray.shutdown()
