"""Which library runs an ONNX graph: onnxruntime or OpenVINO, behind one session seam.

`serving.encoder.runtime` (`EncoderRuntime`) picks it. Both read the same `model.onnx` (or
`model.int8.onnx`) the tuner exports; tokenisation, padding and batching stay in the encoders,
so only the graph run differs. `GraphSession` is onnxruntime's own `InferenceSession` shape
(`get_inputs`, `get_outputs`, `run`), so an onnxruntime session is one as it is and
`OpenVinoSession` adapts a compiled OpenVINO model to it.

OpenVINO is an optional extra (`pip install 'clicktune[openvino]'`); asking for it where it is
not installed is a `ModelLoadError` that names the runtime and the reason, so a hot swap refuses
the version and the old one keeps serving. `auto` is decided by `choose_runtime` (a short
self-test in serving/encoders/runtime_choice.py); it never reaches `open_session`.
"""

from __future__ import annotations

import importlib
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from serving.config import EncoderRuntime, EncoderSettings
from serving.errors import ModelLoadError

__all__ = [
    "GraphSession",
    "OpenVinoSession",
    "installed_runtimes",
    "open_session",
    "ort_providers",
    "session_options",
]


class GraphSession(Protocol):
    """An ONNX graph ready to run: onnxruntime's `InferenceSession` interface, the part we use."""

    def get_inputs(self) -> list[Any]: ...  # objects with a `.name`

    def get_outputs(self) -> list[Any]: ...

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def open_session(graph: Path, settings: EncoderSettings) -> GraphSession:
    """`graph` compiled for the CPU by `settings.runtime`; `ModelLoadError` naming the file, the
    runtime and the reason when it cannot be."""
    runtime = settings.runtime
    if runtime is EncoderRuntime.auto:
        raise ModelLoadError(
            f"{graph}: runtime 'auto' must be decided before a graph is opened "
            "(serving.encoders.model_loader.load_model_dir does it); pass onnxruntime or openvino"
        )
    if not graph.is_file():
        raise ModelLoadError(f"{graph} does not exist ({runtime.value})")
    if runtime is EncoderRuntime.openvino:
        return OpenVinoSession.open(graph, settings)
    try:
        return ort.InferenceSession(  # type: ignore[no-any-return]
            str(graph), session_options(settings), providers=ort_providers()
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"{graph} cannot be loaded by onnxruntime: {exc}") from exc


def installed_runtimes() -> list[EncoderRuntime]:
    """The concrete runtimes this host can import, onnxruntime first."""
    found = [EncoderRuntime.onnxruntime]
    try:
        _openvino()
    except ModelLoadError:
        return found
    return [*found, EncoderRuntime.openvino]


def session_options(settings: EncoderSettings) -> ort.SessionOptions:
    """onnxruntime session options from the encoder settings (threads, spinning)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = settings.inter_op_threads
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
    )
    return options


def ort_providers() -> list[str]:
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass(frozen=True)
class _Port:
    name: str


class OpenVinoSession:
    """A graph compiled by OpenVINO for the CPU, run like an onnxruntime session.

    An OpenVINO infer request serves one run at a time, so concurrent callers (request threads
    without a micro-batcher, the registry's shared encoders) each take an idle request from a
    pool, made on demand; the compiled model itself is shared.
    """

    def __init__(self, compiled: Any) -> None:
        self._compiled = compiled
        # Every name of a port: OpenVINO folds Identity nodes, so the graph's output name may be
        # one of several names its tensor carries.
        self._inputs = [_Port(name) for p in compiled.inputs for name in sorted(p.get_names())]
        self._outputs = [_Port(name) for p in compiled.outputs for name in sorted(p.get_names())]
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    @classmethod
    def open(cls, graph: Path, settings: EncoderSettings) -> OpenVinoSession:
        ov = _openvino()
        config = {
            # f32: on CPUs with bf16 units OpenVINO would otherwise run fp32 graphs in bf16 and
            # miss the 0.9999 parity the tuner checked the export to.
            "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY",  # one stream: the micro-batcher makes the batches
        }
        if settings.intra_op_threads > 0:
            config["INFERENCE_NUM_THREADS"] = str(settings.intra_op_threads)
        try:
            core = ov.Core()
            compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError for every load problem
            raise ModelLoadError(f"{graph} cannot be loaded by openvino: {exc}") from exc
        return cls(compiled)

    def get_inputs(self) -> list[_Port]:
        return list(self._inputs)

    def get_outputs(self) -> list[_Port]:
        return list(self._outputs)

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            request.infer(feed)
            # Copies: the request's output buffers are reused by its next run.
            return [np.array(request.get_tensor(name).data) for name in output_names]
        finally:
            self._idle.put(request)


def _openvino() -> Any:
    try:
        return importlib.import_module("openvino")
    except ImportError as exc:
        raise ModelLoadError(
            f"runtime 'openvino' is not installed ({exc}); install clicktune[openvino] "
            "or set serving.encoder.runtime to onnxruntime"
        ) from exc
