"""Hot swap: load a model version, warm it up, check it on probe texts, then swap it in.

A version that cannot be loaded, gives wrong vectors (not finite, not unit length, another
dimension than declared, different vectors for the same text) or would not fit the live index
(another dimension, unless the caller says it is a reindex) is refused with the reason; the slot
keeps serving the old model. Swaps and alias moves are serialised by one lock per replica, so the
registry poller never races an admin promote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from serving.encoder import ServableEncoder
from serving.errors import RegistryError, SwapRefusedError
from serving.registry import LocalRegistry
from serving.slot import ModelSlot

__all__ = ["HotSwapper", "SwapResult", "check_encoder"]

log = logging.getLogger(__name__)

ModelLoader = Callable[[Path], ServableEncoder]
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
    """Raise `SwapRefusedError` unless `encoder` gives sane, repeatable vectors for `probes`."""
    name = f"model {encoder.version!r}"
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


class HotSwapper:
    """Swaps registry versions into one slot after checking them; one swap at a time."""

    def __init__(
        self,
        slot: ModelSlot,
        registry: LocalRegistry,
        loader: ModelLoader,
        probes: Sequence[str],
        expected_dimension: Callable[[], int | None] = lambda: None,
    ) -> None:
        self.slot = slot
        self.registry = registry
        self._loader = loader
        self._probes = list(probes)
        self._expected_dimension = expected_dimension
        self.lock = threading.RLock()
        self.last_refusal: dict[str, str] | None = None

    def swap_to(self, ref: str, *, reindex: bool = False) -> SwapResult:
        """Serve registry version (or alias) `ref`; raise `SwapRefusedError` and keep the old one
        when it does not load or fails its checks. `reindex=True` accepts a new dimension."""
        with self.lock:
            started = time.perf_counter()
            try:
                version = self.registry.get(ref)
            except RegistryError as exc:
                raise self._refuse(ref, str(exc)) from exc
            current = self.slot.version
            if version.version == current:
                return SwapResult(version.version, current, 0.0, changed=False)
            try:
                encoder = self._loader(version.path)
                expected = None if reindex else self._expected_dimension()
                check_encoder(encoder, self._probes, expected)
            except SwapRefusedError as exc:
                raise self._refuse(version.version, str(exc)) from exc
            except Exception as exc:  # a corrupt file fails in many library-specific ways
                raise self._refuse(version.version, f"cannot load: {exc}") from exc
            self.slot.swap(encoder)
            seconds = time.perf_counter() - started
            log.info(
                "slot %r now serves %r (was %r, %.2f s)",
                self.slot.name,
                version.version,
                current,
                seconds,
            )
            return SwapResult(version.version, current, seconds)

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

    def _refuse(self, version: str, reason: str) -> SwapRefusedError:
        message = f"model {version!r} refused, still serving {self.slot.version!r}: {reason}"
        self.last_refusal = {"version": version, "reason": message}
        log.warning("%s", message)
        return SwapRefusedError(message)
