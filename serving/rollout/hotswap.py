"""Hot swap: load a model version, warm it up, check it on probe texts, then swap it in.

A version that cannot be loaded, gives wrong vectors (not finite, not unit length, another
dimension than declared, different vectors for the same text; for a CLIP model the same on a
probe image) or would not fit the live index (another dimension or another model kind, text vs
CLIP, unless the caller says it is a reindex) is refused with the reason; the slot keeps serving
the old model. A query model is checked on both sides (its query graph and its document model),
and fits the live index when its document model's kind does: it searches that model's vectors.
A replica that follows the alias (`swap_to`: the registry poller, the control topic) also asks
`pairing` whether the live index was built by that document model, and refuses the query model
naming the pairing when not; `swap_after`'s caller moves the index itself (the rollout checks the
pairing there). Refusals are counted by cause: `clicktune_swap_refusals_total{slot,cause}`
(`swap_metrics`).
Swaps and alias moves are serialised by one lock per replica, so the registry poller never races
an admin promote. `swap_after` runs the admin API's alias moves
(serving/rollout/rollout.py) between the checks and the swap: a refused model moves no alias.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from serving.encoders.encoder import ServableEncoder, wrapper_chain
from serving.encoders.encoder_pair import document_encoder
from serving.encoders.model_loader import image_tower
from serving.encoders.slot import ModelSlot
from serving.errors import PairingError, RegistryError, SwapRefusedError
from serving.index.index_versions import index_version
from serving.index.vector_index import DocumentIndex
from serving.models.registries import ModelRegistry
from serving.models.registry import ModelVersion

__all__ = ["HotSwapper", "SwapResult", "check_encoder", "live_index_kind", "swap_metrics"]

log = logging.getLogger(__name__)

ModelLoader = Callable[[Path], ServableEncoder]
Pairing = Callable[[ModelVersion], object]  # raises PairingError when a query model does not fit
Moved = TypeVar("Moved")
NORM_TOLERANCE = 1e-3
REPEAT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class SwapResult:
    """What a swap did: the version now served, the one it replaced, how long it took."""

    version: str
    previous: str | None
    seconds: float
    changed: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_encoder(
    encoder: ServableEncoder, probes: Sequence[str], expected_dimension: int | None = None
) -> None:
    """Raise `SwapRefusedError` unless `encoder` gives sane, repeatable vectors for `probes`
    (a query model: on both sides)."""
    documents = document_encoder(encoder)
    if documents is not encoder:
        check_encoder(documents, probes, expected_dimension)
    name = f"model {encoder.version!r}{_graph_of(encoder)}"
    if expected_dimension is not None and encoder.dimension != expected_dimension:
        raise SwapRefusedError(
            f"{name} has dimension {encoder.dimension} but the live index holds "
            f"{expected_dimension}-dimensional vectors; promote it as a reindex instead"
        )
    texts = list(probes)
    try:
        first = np.asarray(encoder.encode(texts))  # also the warm-up run
        again = np.asarray(encoder.encode(texts + texts[:1]))
    except Exception as exc:  # any failure of a candidate model means: do not serve it
        raise SwapRefusedError(f"{name} failed on the probe texts: {exc}") from exc
    if first.shape != (len(texts), encoder.dimension):
        raise SwapRefusedError(
            f"{name} returned shape {first.shape} for {len(texts)} probes; "
            f"want ({len(texts)}, {encoder.dimension})"
        )
    if not np.isfinite(first).all():
        raise SwapRefusedError(f"{name} returned NaN or infinite values on the probe texts")
    norms = np.linalg.norm(first, axis=1)
    if not np.allclose(norms, 1.0, atol=NORM_TOLERANCE):
        raise SwapRefusedError(f"{name} returned vectors of norm {norms.round(4).tolist()}; want 1")
    if not np.allclose(first, again[: len(texts)], atol=REPEAT_TOLERANCE) or not np.allclose(
        first[0], again[-1], atol=REPEAT_TOLERANCE
    ):
        raise SwapRefusedError(f"{name} gave different vectors for the same text")
    tower = image_tower(encoder)
    if tower is not None:
        _check_image_tower(name, tower, encoder.dimension)


def _graph_of(encoder: Any) -> str:
    """ " (model.int8.onnx on openvino)": the graph file and runtime behind serving's wrappers,
    so a refusal names the variant that failed; "" for encoders that run no graph file."""
    for layer in wrapper_chain(encoder):
        graph = getattr(layer, "graph", None)
        if isinstance(graph, str):
            return f" ({graph})"
    return ""


def _check_image_tower(name: str, tower: Any, dimension: int) -> None:
    """A CLIP model's image tower must embed a probe image into a unit vector of `dimension`."""
    probe = np.linspace(0, 255, 40 * 48 * 3).reshape(40, 48, 3).astype(np.uint8)  # (H, W, RGB)
    try:
        vectors = np.asarray(tower.encode_images([probe, probe]))
    except Exception as exc:  # a broken image graph must not reach documents
        raise SwapRefusedError(f"{name} failed on the probe image: {exc}") from exc
    if vectors.shape != (2, dimension) or not np.isfinite(vectors).all():
        raise SwapRefusedError(
            f"{name} returned shape {vectors.shape} (or non-finite values) for 2 probe images; "
            f"want (2, {dimension})"
        )
    norms = np.linalg.norm(vectors, axis=1)
    if not np.allclose(norms, 1.0, atol=NORM_TOLERANCE) or not np.allclose(
        vectors[0], vectors[1], atol=REPEAT_TOLERANCE
    ):
        raise SwapRefusedError(
            f"{name} returned image vectors of norm {norms.round(4).tolist()} that differ for "
            "the same image; want 1 and equal"
        )


def live_index_kind(doc_index: DocumentIndex, registry: ModelRegistry) -> str | None:
    """The model kind ("text", "clip") whose vectors the live index holds; None if unknown."""
    live = doc_index.live_index()
    version = index_version(doc_index, live) if live is not None else None
    if version is None:
        return None
    try:
        return registry.get(version).kind
    except RegistryError:  # an index from another registry: its dimension check still applies
        return None


class HotSwapper:
    """Swaps registry versions into one slot after checking them; one swap at a time."""

    def __init__(
        self,
        slot: ModelSlot,
        registry: ModelRegistry,
        loader: ModelLoader,
        probes: Sequence[str],
        expected_dimension: Callable[[], int | None] = lambda: None,
        expected_kind: Callable[[], str | None] = lambda: None,
        pairing: Pairing = lambda version: None,
    ) -> None:
        self.slot = slot
        self.registry = registry
        self._loader = loader
        self._probes = list(probes)
        self._expected_dimension = expected_dimension
        self._expected_kind = expected_kind
        self._pairing = pairing
        self.lock = threading.RLock()
        self.last_refusal: dict[str, str] | None = None
        self.refusals: Counter[str] = Counter()  # by cause: registry, pairing, kind, checks

    def swap_to(self, ref: str, *, reindex: bool = False) -> SwapResult:
        """Serve registry version (or alias) `ref`; raise `SwapRefusedError` and keep the old one
        when it does not load or fails its checks. `reindex=True` accepts a new dimension or
        model kind (the caller re-embeds the index). A query model is refused unless the live
        index was built by its document model, whatever `reindex` says: it is never reindexed."""
        return self._swap(ref, lambda version: None, reindex, check_pairing=True)[0]

    def swap_after(
        self, ref: str, move: Callable[[str], Moved], *, reindex: bool = False
    ) -> tuple[SwapResult, Moved]:
        """Check `ref`, run `move(version)`, then serve it: the admin API moves the document and
        registry aliases in `move` only once the model passed its checks, and swaps the slot only
        once they moved. If the checks or `move` fail, the slot keeps the old model. `move`
        answers for a query model's pairing (a rollback moves the index it needs first)."""
        return self._swap(ref, move, reindex, check_pairing=False)

    def _swap(
        self, ref: str, move: Callable[[str], Moved], reindex: bool, *, check_pairing: bool
    ) -> tuple[SwapResult, Moved]:
        with self.lock:
            started = time.perf_counter()
            try:
                version = self.registry.get(ref)
            except RegistryError as exc:
                raise self._refuse(ref, str(exc), "registry") from exc
            current = self.slot.version
            if version.version == current:
                moved = move(version.version)
                return SwapResult(version.version, current, 0.0, changed=False), moved
            if check_pairing and version.document_model is not None:
                self._check_pairing(version)
            encoder = self._checked(version, reindex)
            moved = move(version.version)
            self.slot.swap(encoder)
            seconds = time.perf_counter() - started
            log.info(
                "slot %r now serves %r (was %r, %.2f s)",
                self.slot.name,
                version.version,
                current,
                seconds,
            )
            return SwapResult(version.version, current, seconds), moved

    def _checked(self, version: ModelVersion, reindex: bool) -> ServableEncoder:
        """The encoder of `version`, loaded and through its probe checks, or a refusal."""
        kind = None if reindex else self._expected_kind()
        searched = self._searched_kind(version)
        if kind is not None and searched != kind:
            raise self._refuse(
                version.version,
                f"it searches vectors of a {searched!r} model but the live index holds vectors "
                f"of a {kind!r} model; promote it as a reindex instead",
                "kind",
            )
        try:
            encoder = self._loader(version.path)
            expected = None if reindex else self._expected_dimension()
            check_encoder(encoder, self._probes, expected)
        except SwapRefusedError as exc:
            raise self._refuse(version.version, str(exc)) from exc
        except Exception as exc:  # a corrupt file fails in many library-specific ways
            raise self._refuse(version.version, f"cannot load: {exc}") from exc
        return encoder

    def _searched_kind(self, version: ModelVersion) -> str:
        """The kind of the vectors `version` searches: its document model's for a query model."""
        if version.document_model is None:
            return version.kind
        try:
            return self.registry.get(version.document_model).kind
        except RegistryError as exc:
            raise self._refuse(version.version, str(exc), "registry") from exc

    def _check_pairing(self, version: ModelVersion) -> None:
        """Refuse query model `version` unless its document model built the live index. An
        index that cannot be read now is no refusal: the error goes up and the follower retries."""
        try:
            self._pairing(version)
        except PairingError as exc:
            raise self._refuse(version.version, str(exc), "pairing") from exc

    def promote(self, version: str, alias: str, *, reindex: bool = False) -> SwapResult:
        """Check and serve `version` here, then point `alias` at it in the registry."""
        with self.lock:
            result = self.swap_to(version, reindex=reindex)
            self.registry.set_alias(alias, result.version)
            return result

    def rollback(self, alias: str) -> SwapResult:
        """Serve the version `alias` named before, then move `alias` back to it."""
        with self.lock:
            history = self.registry.alias_history(alias)
            if len(history) < 2:
                raise RegistryError(
                    f"alias {alias!r} has no previous version to roll back to (history: {history})"
                )
            result = self.swap_to(history[-2])
            self.registry.rollback_alias(alias)
            return result

    def _refuse(self, version: str, reason: str, cause: str = "checks") -> SwapRefusedError:
        message = f"model {version!r} refused, still serving {self.slot.version!r}: {reason}"
        self.last_refusal = {"version": version, "reason": message}
        self.refusals[cause] += 1
        log.warning("%s", message)
        return SwapRefusedError(message)


class _RefusalCollector(Collector):
    """The swapper's refusal counts at scrape time: the swapper stays the one source of truth."""

    def __init__(self, swapper: HotSwapper) -> None:
        self.swapper = swapper

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "clicktune_swap_refusals",
            "model versions this replica refused to swap in, by cause",
            labels=["slot", "cause"],
        )
        for cause, count in sorted(self.swapper.refusals.items()):
            family.add_metric([self.swapper.slot.name, cause], count)
        yield family


def swap_metrics(swapper: HotSwapper) -> Collector:
    """`clicktune_swap_refusals_total{slot,cause}`: registry, pairing, kind or checks."""
    return _RefusalCollector(swapper)
