"""Static int8 of an exported text model: NNCF post-training quantisation, checked on OpenVINO.

`tuner.export.int8_method: static` writes `model.int8.onnx` with NNCF (`nncf.quantize`, the
transformer preset: activation scales fixed from calibration, weights per channel), from the
same in-domain calibration texts as the dynamic variant (the validation sessions' queries and
the documents shown for them; `tuner.int8_variant.calibration_split`, never test queries). The
result is a QDQ ONNX graph: OpenVINO runs it with int8 kernels (issue #22 measured 2.7x torch
fp32 on all-MiniLM-L6-v2 against 1.9x for the dynamic onnxruntime variant), onnxruntime runs it
too. The report's cosines and speed come from serving's own encoder on `runtime` (OpenVINO when
installed, else onnxruntime), int8 against fp32 on the same runtime, so the bounds hold for what
a replica will run; `tuner.int8_variant` keeps or drops the file on those bounds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.encoder import OnnxTextEncoder
from serving.encoders.runtime import installed_runtimes
from tuner.errors import ExportError
from tuner.quantize import INT8_FILE, ONNX_FILE, QuantReport

__all__ = ["STATIC_GROUPS", "check_runtime", "quantize_static"]

log = logging.getLogger(__name__)

STATIC_GROUPS = ("nncf transformer preset",)
REPEATS = 3


def check_runtime() -> EncoderRuntime:
    """The runtime a static variant is checked on: OpenVINO when installed, else onnxruntime."""
    installed = installed_runtimes()
    return EncoderRuntime.openvino if EncoderRuntime.openvino in installed else installed[0]


def quantize_static(
    model_dir: Path,
    out_dir: Path,
    calibration_texts: Sequence[str],
    *,
    min_cosine: float = 0.99,
    eval_texts: Sequence[str] | None = None,
    max_length: int = 256,
) -> QuantReport:
    """Write `out_dir/model.int8.onnx` calibrated on `calibration_texts`; report its min/mean
    cosine to fp32 and its speedup on `eval_texts` (give held-out ones) on `check_runtime()`."""
    if not calibration_texts:
        raise ExportError("quantize_static needs calibration texts; got none")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    import nncf
    import onnx

    model = onnx.load(str(model_dir / ONNX_FILE))
    feed = _feeder(model_dir, model, max_length)
    dataset = nncf.Dataset(list(calibration_texts), feed)
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(calibration_texts),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(out_dir / INT8_FILE))
    runtime = check_runtime()
    report = _report(model_dir, out_dir, list(eval_texts or calibration_texts), runtime, max_length)
    return QuantReport(
        **report, quantized_groups=STATIC_GROUPS, skipped_groups=(), bound=min_cosine
    )


def _feeder(model_dir: Path, model: Any, max_length: int) -> Any:
    """text -> the graph's int64 inputs for one text (NNCF collects statistics per item)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    names = {i.name for i in model.graph.input}

    def feed(text: str) -> dict[str, np.ndarray]:
        encoding = tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)  # (1, seq)
        inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in names:
            inputs["token_type_ids"] = np.zeros_like(ids)
        return inputs

    return feed


def _report(
    model_dir: Path, out_dir: Path, texts: list[str], runtime: EncoderRuntime, max_length: int
) -> dict[str, Any]:
    """Cosines of int8 to fp32 on `texts` through serving's encoder on `runtime`, and the
    speedup: both encoders timed in turn `REPEATS` times, the fastest run of each kept."""
    fp32 = EncoderSettings(runtime=runtime, variant="fp32", max_length=max_length)
    int8 = fp32.model_copy(update={"variant": "int8"})
    encoders = [OnnxTextEncoder.from_dir(model_dir, fp32), OnnxTextEncoder.from_dir(out_dir, int8)]
    best = [float("inf"), float("inf")]
    vectors: list[np.ndarray] = []
    for repeat in range(REPEATS):
        for g, encoder in enumerate(encoders):
            started = time.perf_counter()
            out = encoder.encode(texts)
            best[g] = min(best[g], time.perf_counter() - started)
            if repeat == 0:
                vectors.append(out)
    cosines = np.sum(vectors[0] * vectors[1], axis=1)
    log.info("static int8 on %s: min cosine %.5f over %d texts", runtime, cosines.min(), len(texts))
    return {
        "path": out_dir / INT8_FILE,
        "min_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
        "speedup": round(best[0] / best[1], 3),
    }
