"""`clicktune reindex --engine ray`: the Ray cluster, the actors' factories and the copier.

The actors load the model from the registry folder by path, so on a cluster of several hosts
that folder (`$CLICKTUNE_HOME/models`) must be at the same path on every node (a shared
volume), and each node needs clicktune with the `scale` extra installed.
"""

from __future__ import annotations

import math
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clicktune.config import Settings
    from serving.config import EncoderSettings
    from serving.encoders.encoder import ServableEncoder
    from serving.index.reindex_ray import RayCopier


def ray_copier(
    settings: Settings,
    ray: ModuleType,
    model: str,
    encoder: ServableEncoder,
    client: Any,
    *,
    progress: bool = True,
) -> RayCopier:
    """A `RayCopier` for registry model `model` (loaded here as `encoder`) on the cluster `ray`
    is connected to (serving/index/ray_cluster.py)."""
    from clicktune.clients import model_registry, opensearch_client
    from serving.encoders.model_loader import load_model_dir
    from serving.index.reindex_ray import RayCopier

    registry = model_registry(settings)
    version = registry.get(model)
    make_encoder = partial(load_model_dir, version.path, actor_encoder(settings, encoder), registry)
    return RayCopier(
        ray,
        client,
        partial(opensearch_client, settings.opensearch),
        make_encoder,
        settings.serving.index,
        settings.serving.reindex.ray,
        batch_size=settings.serving.index.bulk_batch_size,
        progress=progress,
    )


def actor_encoder(settings: Settings, encoder: ServableEncoder) -> EncoderSettings:
    """The encoder settings of one actor: as many ONNX threads as it has CPUs, and the runtime
    this process chose for the model when `auto` (so the actors do not time it again)."""
    from serving.config import EncoderRuntime
    from serving.encoders.encoder_pair import document_encoder
    from serving.encoders.model_loader import model_kind
    from serving.encoders.runtime_choice import PROCESS_RUNTIMES

    chosen = settings.serving.encoder
    threads = max(1, math.ceil(settings.serving.reindex.ray.cpus_per_actor))
    update: dict[str, Any] = {"intra_op_threads": threads}
    if chosen.runtime is EncoderRuntime.auto:
        decided = PROCESS_RUNTIMES.decided(model_kind(document_encoder(encoder)))
        update["runtime"] = decided.runtime if decided else EncoderRuntime.onnxruntime
    return chosen.model_copy(update=update)
