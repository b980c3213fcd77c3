"""Text encoders: the ONNX one the product serves, and a hashing fake for tests.

`OnnxTextEncoder` runs a model directory (see `serving.models.model_dir`) on onnxruntime or OpenVINO
(`EncoderSettings.runtime`, serving/encoders/runtime.py) + tokenizers, without torch;
`EncoderSettings.variant == "int8"` picks `model.int8.onnx` (written by
`tuner.quantize`) when the directory has one. Texts are sorted by token length, cut into runs of
at most `max_batch_tokens` padded tokens (serving/encoders/token_batches.py) and padded per run, so
a batch of short queries never pays for one long document.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tokenizers import Encoding, Tokenizer

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.runtime import GraphSession, open_session, session_options
from serving.encoders.runtime_choice import PROCESS_RUNTIMES
from serving.encoders.token_batches import TokenTally, plan_batches
from serving.errors import ModelLoadError
from serving.models.model_dir import read_model_meta

__all__ = [
    "INT8_FILE",
    "Encoder",
    "HashingEncoder",
    "OnnxTextEncoder",
    "ServableEncoder",
    "model_file",
    "session_options",
    "wrapper_chain",
]

log = logging.getLogger(__name__)

OUTPUT = "sentence_embedding"
INT8_FILE = "model.int8.onnx"
REQUIRED_INPUTS = ("input_ids", "attention_mask")
# A query model's model.onnx is a text graph too (it embeds queries; serving.encoders.model_loader
# pairs it with its document model).
TEXT_GRAPH_KINDS = ("text", "query")


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit-length float32 vectors, one row per text."""

    @property
    def dimension(self) -> int: ...

    @property
    def version(self) -> str: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class ServableEncoder(Encoder, Protocol):
    """An encoder the HTTP API can serve: it also counts tokens for usage reporting."""

    def count_tokens(self, texts: list[str]) -> int: ...


class DelegatingEncoder:
    """An encoder wrapping another (metering, batching, ...): forwards what it does not override."""

    def __init__(self, inner: ServableEncoder) -> None:
        self.inner = inner

    @property
    def dimension(self) -> int:
        return self.inner.dimension

    @property
    def version(self) -> str:
        return self.inner.version

    def count_tokens(self, texts: list[str]) -> int:
        return self.inner.count_tokens(texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        return self.inner.encode(texts)


def wrapper_chain(encoder: Any) -> Iterator[Any]:
    """`encoder`, then each encoder it wraps (`.inner`, any depth), outermost first."""
    for _ in range(16):  # wrappers nest a few deep, never in a cycle
        if encoder is None:
            return
        yield encoder
        encoder = getattr(encoder, "inner", None)


class OnnxTextEncoder:
    """A sentence embedding model exported to ONNX, run with length-bucketed batches."""

    def __init__(
        self,
        session: GraphSession,
        tokenizer: Tokenizer,
        *,
        version: str,
        dimension: int,
        batch_size: int,
        graph: str = "model.onnx",
        max_batch_tokens: int | None = None,
    ) -> None:
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if not set(REQUIRED_INPUTS) <= inputs or OUTPUT not in outputs:
            raise ModelLoadError(
                f"model {version!r} has inputs {sorted(inputs)} and outputs {sorted(outputs)}; "
                f"it needs inputs {list(REQUIRED_INPUTS)} and output {OUTPUT!r}"
            )
        self._session = session
        self._tokenizer = tokenizer
        self._version = version
        self._dimension = dimension
        self._batch_size = batch_size
        self._uses_token_types = "token_type_ids" in inputs
        self.graph = graph  # what runs, e.g. "model.int8.onnx on openvino", for refusals
        self._max_batch_tokens = max_batch_tokens  # None: cut by count alone
        self.tally = TokenTally()  # real and padded tokens run; serving's metrics swap in theirs

    @classmethod
    def from_dir(cls, path: Path, settings: EncoderSettings) -> OnnxTextEncoder:
        """Load `model.onnx`, `tokenizer.json` and `clicktune.json` from a model directory
        (runtime `auto`: the one this process decided on, deciding it now if need be)."""
        if settings.runtime is EncoderRuntime.auto:
            return PROCESS_RUNTIMES.load(path, "text", settings, cls.from_dir)  # type: ignore[return-value]
        meta = read_model_meta(path, error=ModelLoadError)
        if meta["kind"] not in TEXT_GRAPH_KINDS:
            raise ModelLoadError(
                f"{path}: kind {meta['kind']!r} is not a text model (want one of "
                f"{list(TEXT_GRAPH_KINDS)})"
            )
        tokenizer = Tokenizer.from_file(str(Path(path) / "tokenizer.json"))
        tokenizer.no_padding()  # padding happens per batch, to the batch's longest text
        tokenizer.enable_truncation(max_length=min(settings.max_length, meta["max_length"]))
        graph = model_file(Path(path), settings.variant)
        return cls(
            open_session(graph, settings),
            tokenizer,
            version=meta["version"],
            dimension=meta["dimension"],
            batch_size=settings.batch_size,
            graph=f"{graph.name} on {settings.runtime.value}",
            max_batch_tokens=settings.max_batch_tokens,
        )

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def version(self) -> str:
        return self._version

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model sees for `texts` (after truncation), for usage reporting."""
        return sum(len(e.ids) for e in self._tokenizer.encode_batch(texts))

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed `texts`: float32 [len(texts), dimension], rows L2-normalised, input order."""
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [len(e.ids) for e in encodings]
        budget = self._max_batch_tokens or self._batch_size * max(1, max(lengths))
        for rows in plan_batches(lengths, max_tokens=budget, max_texts=self._batch_size):
            out[rows] = self._run([encodings[i] for i in rows])
        return out

    def _run(self, batch: list[Encoding]) -> np.ndarray:
        width = max(1, max(len(e.ids) for e in batch))
        self.tally.add(sum(len(e.ids) for e in batch), len(batch) * width)
        ids = np.zeros((len(batch), width), dtype=np.int64)  # (batch, seq)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, enc in enumerate(batch):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
            types[row, :n] = enc.type_ids
        feed = {"input_ids": ids, "attention_mask": mask}
        if self._uses_token_types:
            feed["token_type_ids"] = types
        (vectors,) = self._session.run([OUTPUT], feed)  # (batch, dimension)
        if vectors.shape[1] != self._dimension:
            raise ModelLoadError(
                f"model {self._version!r} returned dimension {vectors.shape[1]}, "
                f"but clicktune.json says {self._dimension}"
            )
        return vectors.astype(np.float32, copy=False)


def model_file(path: Path, variant: str) -> Path:
    """The graph to load for `variant`: `model.int8.onnx` when asked for and present, else fp32."""
    if variant == "int8":
        int8 = path / INT8_FILE
        if int8.is_file():
            return int8
        log.info("%s has no %s; serving the fp32 model.onnx", path, INT8_FILE)
    return path / "model.onnx"


class HashingEncoder:
    """A deterministic bag-of-words encoder (feature hashing) for tests and demos.

    Texts that share words get similar vectors, so k-NN search behaves plausibly; it needs no
    model files. An empty text maps to a fixed unit vector, never to zero (cosine needs norm > 0).
    """

    def __init__(self, dimension: int = 64, version: str = "hashing") -> None:
        self._dimension = dimension
        self._version = version

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def version(self) -> str:
        return self._version

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(_words(t)) for t in texts)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _words(text):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                slot = int.from_bytes(digest[:4], "little") % self._dimension
                out[row, slot] += 1.0 if digest[4] & 1 else -1.0
            if not out[row].any():
                out[row, 0] = 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())
