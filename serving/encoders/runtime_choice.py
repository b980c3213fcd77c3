"""`serving.encoder.runtime: auto`: time each installed runtime on the model, serve the faster.

Which runtime wins depends on the CPU (OpenVINO's fp32 path was 1.5x onnxruntime's on the
2-core AVX-512 hosts of issue #22, other hosts differ) and on the graph, so the choice is
measured on the host rather than configured: the first model a process loads is opened with
each installed runtime, each embeds the same `SELF_TEST_TEXTS` after a warm-up run, and the one
with more texts a second serves every model of that kind in this process (a hot swap never
changes runtime mid-flight). Both figures are logged. A runtime that is not installed or cannot
load the model drops out of the test with its reason logged; onnxruntime always stays in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.runtime import installed_runtimes

if TYPE_CHECKING:  # serving.encoders.encoder loads through this module
    from serving.encoders.encoder import ServableEncoder

__all__ = [
    "PROCESS_RUNTIMES",
    "RuntimeChoice",
    "RuntimeChooser",
    "SELF_TEST_TEXTS",
    "measure_texts_per_s",
]

log = logging.getLogger(__name__)

# 32 texts of 8 to 40 words: a search mix of queries and passages, so padding and batching
# weigh as they do when serving. Words outside a vocabulary are fine (they tokenise to pieces).
_SENTENCE = (
    "search results rank documents by how well their vectors match the query embedding "
    "while users click add to cart and buy what they came for on the first page"
)
_WORDS = _SENTENCE.split(" ")
SELF_TEST_TEXTS = tuple(
    " ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(8 + (i * 7) % 33)) for i in range(32)
)
REPEATS = 3

Loader = Callable[[Path, EncoderSettings], "ServableEncoder"]
Measure = Callable[["ServableEncoder"], float]


def measure_texts_per_s(encoder: ServableEncoder) -> float:
    """Texts a second of `encoder` on `SELF_TEST_TEXTS`: best of `REPEATS` after a warm-up."""
    texts = list(SELF_TEST_TEXTS)
    encoder.encode(texts)  # warm-up: first runs allocate and compile kernels per shape
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        encoder.encode(texts)
        best = min(best, time.perf_counter() - started)
    return len(texts) / max(best, 1e-9)


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtime a process serves with, the texts/s each one measured, and why others left."""

    runtime: EncoderRuntime
    texts_per_s: dict[str, float]
    dropped: dict[str, str] = field(default_factory=dict)  # runtime -> why it was not timed

    def describe(self) -> str:
        timed = ", ".join(f"{r} {v:.0f} texts/s" for r, v in self.texts_per_s.items())
        dropped = "".join(f"; {r} left out: {why}" for r, why in self.dropped.items())
        return f"runtime {self.runtime.value} ({timed}{dropped})"


class RuntimeChooser:
    """Decides `auto` once per model kind and process; later loads reuse the decision."""

    def __init__(self, measure: Measure = measure_texts_per_s) -> None:
        self._measure = measure
        self._decided: dict[str, RuntimeChoice] = {}
        self._lock = threading.Lock()

    def load(
        self, path: Path, kind: str, settings: EncoderSettings, load: Loader
    ) -> ServableEncoder:
        """`load(path, settings)` on a concrete runtime: as given, or decided for `kind` now
        (timing each runtime on model `path`, the winner's encoder returned) or earlier."""
        if settings.runtime is not EncoderRuntime.auto:
            return load(path, settings)
        with self._lock:  # two first loads at once must not time each other
            choice = self._decided.get(kind)
            if choice is None:
                choice, encoder = self._choose(path, settings, load)
                self._decided[kind] = choice
                log.info("encoder runtime auto, %s models (%s): %s", kind, path, choice.describe())
                return encoder
        return load(path, settings.model_copy(update={"runtime": choice.runtime}))

    def _choose(
        self, path: Path, settings: EncoderSettings, load: Loader
    ) -> tuple[RuntimeChoice, ServableEncoder]:
        figures: dict[str, float] = {}
        dropped: dict[str, str] = {}
        encoders: dict[str, ServableEncoder] = {}
        installed = installed_runtimes()
        if EncoderRuntime.openvino not in installed:
            dropped[EncoderRuntime.openvino.value] = "not installed (clicktune[openvino])"
        for runtime in installed:
            try:
                encoder = load(path, settings.model_copy(update={"runtime": runtime}))
                figures[runtime.value] = self._measure(encoder)
            except Exception as exc:  # OpenVINO fails in its own ways; onnxruntime's are final
                if runtime is EncoderRuntime.onnxruntime:
                    raise  # the model itself is broken: the caller refuses it
                dropped[runtime.value] = f"{type(exc).__name__}: {exc}"
                log.warning("encoder runtime auto: %s cannot serve %s: %s", runtime, path, exc)
                continue
            encoders[runtime.value] = encoder
        best = max(figures, key=lambda r: figures[r])
        return RuntimeChoice(EncoderRuntime(best), figures, dropped), encoders[best]

    def decided(self, kind: str) -> RuntimeChoice | None:
        """The decision for `kind`, once made (for logs, metrics and tests)."""
        return self._decided.get(kind)

    def report(self) -> list[str]:
        """One line per decision made: "encoder runtime auto, text models: runtime ... (...)"."""
        return [
            f"encoder runtime auto, {kind} models: {choice.describe()}"
            for kind, choice in sorted(self._decided.items())
        ]


PROCESS_RUNTIMES = RuntimeChooser()  # this process's `auto` decisions; empty until a model loads
