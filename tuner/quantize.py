"""int8 variant of an exported text model that keeps its vectors (`model.int8.onnx`).

A naive `quantize_dynamic` of all-MiniLM-L6-v2 bent vectors to a min cosine of 0.81-0.88 to
fp32: it quantises the embedding Gather and uses per-tensor weights, and on CPUs without VNNI
the u8*s8 kernels saturate. Here only the weight MatMuls (attention and feed-forward
projections) are candidates, quantised per output channel with 7-bit weights (`reduce_range`,
no saturation); the embedding lookups and the pooling/normalisation tail stay fp32.

Not every projection tolerates int8 equally (the feed-forward output, fed by GELU's outliers,
bends most). The candidates are grouped by role (the node name with its layer number removed,
e.g. `encoder/layer.*/output/dense/MatMul`); each group's damage is measured alone on the
calibration texts, and groups are added least harmful first while the min cosine to fp32 stays
at or above `min_cosine`. The report gives the min and mean cosine over `eval_texts` and the
speedup over fp32 on them.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tuner.errors import ExportError

__all__ = ["INT8_FILE", "QuantReport", "quantize_text_model"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
BATCH = 32
LAYER_NUMBER = re.compile(r"layer[._]\d+")


@dataclass(frozen=True)
class QuantReport:
    """How close the int8 graph stays to fp32, and how much faster it runs."""

    path: Path
    min_cosine: float
    mean_cosine: float
    speedup: float
    quantized_groups: tuple[str, ...]
    skipped_groups: tuple[str, ...]


def quantize_text_model(
    model_dir: Path,
    out_dir: Path,
    calibration_texts: Sequence[str],
    *,
    min_cosine: float = 0.99,
    eval_texts: Sequence[str] | None = None,
    max_length: int = 256,
) -> QuantReport:
    """Write `out_dir/model.int8.onnx` for the model directory `model_dir`; see the module doc."""
    if not calibration_texts:
        raise ExportError("quantize_text_model needs calibration texts; got none")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    fp32 = model_dir / ONNX_FILE
    runner = _Runner(model_dir / TOKENIZER_FILE, max_length)
    reference = runner.encode(fp32, calibration_texts)
    groups = _weight_matmul_groups(fp32)
    if not groups:
        raise ExportError(f"{fp32} has no MatMul with a constant weight to quantise")
    with tempfile.TemporaryDirectory(prefix="ct-quant-") as tmp:
        trial = Path(tmp) / INT8_FILE
        damage = {}
        for role, nodes in groups.items():
            _quantize(fp32, trial, nodes)
            damage[role] = _min_cosine(runner.encode(trial, calibration_texts), reference)
        chosen: list[str] = []
        for role in sorted(groups, key=lambda r: -damage[r]):  # least harmful first
            nodes = [n for r in [*chosen, role] for n in groups[r]]
            _quantize(fp32, trial, nodes)
            cosine = _min_cosine(runner.encode(trial, calibration_texts), reference)
            log.info(
                "int8 %s (alone %.5f): with %d groups min cosine %.5f",
                role,
                damage[role],
                len(chosen) + 1,
                cosine,
            )
            if cosine >= min_cosine:
                chosen.append(role)
        if not chosen:
            raise ExportError(
                f"no projection of {fp32} can be int8 with min cosine >= {min_cosine} "
                f"(best group alone: {max(damage.values()):.4f})"
            )
        _quantize(fp32, trial, [n for r in chosen for n in groups[r]])
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trial, out_dir / INT8_FILE)
    return _report(
        runner,
        fp32,
        out_dir / INT8_FILE,
        eval_texts or calibration_texts,
        chosen,
        [r for r in groups if r not in chosen],
    )


def _report(
    runner: _Runner,
    fp32: Path,
    int8: Path,
    texts: Sequence[str],
    chosen: list[str],
    skipped: list[str],
) -> QuantReport:
    started = time.perf_counter()
    reference = runner.encode(fp32, texts)
    fp32_s = time.perf_counter() - started
    started = time.perf_counter()
    vectors = runner.encode(int8, texts)
    int8_s = time.perf_counter() - started
    cosines = np.sum(vectors * reference, axis=1)
    return QuantReport(
        path=int8,
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        speedup=round(fp32_s / max(int8_s, 1e-9), 3),
        quantized_groups=tuple(chosen),
        skipped_groups=tuple(skipped),
    )


def _weight_matmul_groups(path: Path) -> dict[str, list[str]]:
    """Names of MatMul nodes with a constant weight, grouped by role across layers."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in weights:
            role = LAYER_NUMBER.sub("layer.*", node.name or node.output[0])
            groups.setdefault(role, []).append(node.name)
    return groups


def _quantize(src: Path, dst: Path, nodes: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=True,
        reduce_range=True,  # 7-bit weights: no u8*s8 saturation on AVX2/AVX-512 without VNNI
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        nodes_to_quantize=nodes,
    )


def _min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sum(vectors * reference, axis=1).min())


class _Runner:
    """Encodes texts with a graph through the model directory's tokenizer, batches of 32."""

    def __init__(self, tokenizer_file: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length)
        self._tokenizer.enable_padding()

    def encode(self, graph: Path, texts: Sequence[str]) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        out = []
        for start in range(0, len(texts), BATCH):
            enc = self._tokenizer.encode_batch(list(texts[start : start + BATCH]))
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            feeds = {k: v for k, v in feeds.items() if k in wanted}
            out.append(session.run(["sentence_embedding"], feeds)[0])
        return np.concatenate(out)  # (N, D)
