"""int8 variant of an exported text model that keeps its vectors (`model.int8.onnx`).

A naive `quantize_dynamic` of all-MiniLM-L6-v2 bent vectors to a min cosine of 0.81-0.88 to
fp32: it quantises the embedding Gather and uses per-tensor weights, and on CPUs without VNNI
the u8*s8 kernels saturate. Here only the weight MatMuls (attention and feed-forward
projections) are candidates, quantised per output channel with 7-bit weights (`reduce_range`,
no saturation); the embedding lookups and the pooling/normalisation tail stay fp32.

Even so, one activation scale per tensor is too coarse where a few channels carry outliers
(the [CLS] token's massive activations): with every projection int8, short texts fell to a min
cosine of 0.965. So first `tuner.outlier_split` keeps those channels (calibration absmax above
`outlier_ratio` x the median channel's) in an exact fp32 side path, and only the rest is int8.

Not every projection tolerates int8 equally. The candidates are grouped by role (the node name
with its layer number removed, e.g. `encoder/layer.*/output/dense/MatMul`); each group's damage
is measured alone on the calibration texts, and groups are added least harmful first while the
min cosine to fp32 stays at or above `min_cosine + margin`; then the single layers of the groups
left out are tried one by one the same way. The calibration texts get their 1-3 word prefixes
added (one-word queries bend most), and the margin is there because the selection sees only
them: texts unlike them (other domains) bend a little more. The report gives the min and mean
cosine over `eval_texts` (give held-out ones) and the speedup over fp32 on them;
`QuantReport.holds` says whether that min cosine met `min_cosine`.
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
from typing import Any

import numpy as np

from tuner.errors import ExportError
from tuner.outlier_split import split_outliers

__all__ = ["INT8_FILE", "QuantReport", "quantize_text_model"]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
BATCH = 32
PREFIX_TEXTS = 48  # calibration texts whose short prefixes join the calibration
PREFIX_WORDS = (1, 2, 3)
REPEATS = 3  # timing runs per batch and graph; the fastest counts
OUTPUT = "sentence_embedding"
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
    partial_nodes: tuple[str, ...] = ()  # int8 MatMuls of skipped groups (layers that held)
    int8_nodes: int = 0  # projection MatMuls made int8, of `candidate_nodes`
    candidate_nodes: int = 0
    fp32_channels: int = 0  # outlier input channels kept on the fp32 side path, all inputs
    bound: float = 0.0  # the min cosine asked for

    @property
    def holds(self) -> bool:
        """Whether the min cosine over the report's texts met the bound asked for."""
        return self.min_cosine >= self.bound


def quantize_text_model(
    model_dir: Path,
    out_dir: Path,
    calibration_texts: Sequence[str],
    *,
    min_cosine: float = 0.99,
    margin: float = 0.003,
    outlier_ratio: float = 3.0,
    eval_texts: Sequence[str] | None = None,
    max_length: int = 256,
) -> QuantReport:
    """Write `out_dir/model.int8.onnx` for the model directory `model_dir`; see the module doc."""
    if not calibration_texts:
        raise ExportError("quantize_text_model needs calibration texts; got none")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    fp32 = model_dir / ONNX_FILE
    runner = _Runner(model_dir / TOKENIZER_FILE, max_length)
    groups = _weight_matmul_groups(fp32)
    if not groups:
        raise ExportError(f"{fp32} has no MatMul with a constant weight to quantise")
    calibration = _with_short_prefixes(calibration_texts)
    with tempfile.TemporaryDirectory(prefix="ct-quant-") as tmp:
        split = Path(tmp) / "model.split.onnx"
        feeds = [runner.feeds(b) for b in _batches(calibration)]
        nodes = [n for names in groups.values() for n in names]
        channels = split_outliers(fp32, split, nodes, feeds, ratio=outlier_ratio)
        selection = _Selection(runner, fp32, split, Path(tmp) / INT8_FILE, calibration)
        roles, partial = _choose(selection, groups, min_cosine + margin)
        if not roles and not partial:
            raise ExportError(
                f"no projection of {fp32} can be int8 with min cosine >= {min_cosine} + margin "
                f"{margin} on the calibration texts"
            )
        _quantize(split, selection.trial, [*(n for r in roles for n in groups[r]), *partial])
        out_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(selection.trial, out_dir / INT8_FILE)
    report = _report(runner, fp32, out_dir / INT8_FILE, eval_texts or calibration_texts)
    return QuantReport(
        **report,
        quantized_groups=tuple(roles),
        skipped_groups=tuple(r for r in groups if r not in roles),
        partial_nodes=tuple(partial),
        int8_nodes=sum(len(groups[r]) for r in roles) + len(partial),
        candidate_nodes=len(nodes),
        fp32_channels=sum(len(c) for c in channels.values()),
        bound=min_cosine,
    )


def _with_short_prefixes(texts: Sequence[str]) -> list[str]:
    """`texts` plus their first 1, 2 and 3 words: one-word queries bend most (their mean pooling
    averages the error over three tokens), so the selection must see some."""
    prefixes = [" ".join(t.split()[:n]) for t in texts[:PREFIX_TEXTS] for n in PREFIX_WORDS]
    return [*texts, *(p for p in prefixes if p)]


def _choose(
    selection: _Selection, groups: dict[str, list[str]], bound: float
) -> tuple[list[str], list[str]]:
    """Whole roles that hold the bound, then single layers of the roles left out that do."""
    roles = selection.greedy(_least_harmful_first(selection, groups), bound)
    layers = {n: [n] for r in groups if r not in roles for n in groups[r]}
    partial = selection.greedy(layers, bound, [n for r in roles for n in groups[r]])
    return roles, partial


def _least_harmful_first(
    selection: _Selection, groups: dict[str, list[str]]
) -> dict[str, list[str]]:
    """`groups` ordered by the min cosine each reaches alone, highest first."""
    alone = {role: selection.min_cosine(nodes) for role, nodes in groups.items()}
    return {role: groups[role] for role in sorted(groups, key=lambda r: -alone[r])}


class _Selection:
    """Trial quantisations of the split graph, scored by min cosine to fp32 on calibration."""

    def __init__(
        self, runner: _Runner, fp32: Path, split: Path, trial: Path, texts: Sequence[str]
    ) -> None:
        self.runner, self.split, self.trial, self.texts = runner, split, trial, texts
        self.reference = runner.encode(fp32, texts)  # (N, D)

    def min_cosine(self, nodes: list[str]) -> float:
        _quantize(self.split, self.trial, nodes)
        return _min_cosine(self.runner.encode(self.trial, self.texts), self.reference)

    def greedy(
        self, units: dict[str, list[str]], bound: float, base: Sequence[str] = ()
    ) -> list[str]:
        """Units (name -> nodes) added in order on top of `base`, each kept while the min
        cosine stays >= `bound`; the names kept."""
        kept: list[str] = []
        nodes = list(base)
        for name, unit in units.items():
            cosine = self.min_cosine([*nodes, *unit])
            log.info("int8 + %s: min cosine %.5f (bound %.4f)", name, cosine, bound)
            if cosine >= bound:
                kept.append(name)
                nodes += unit
        return kept


def _report(runner: _Runner, fp32: Path, int8: Path, texts: Sequence[str]) -> dict:
    """Min/mean cosine of int8 to fp32 over `texts`, and the speedup: each batch timed
    `REPEATS` times on both graphs in turn and its fastest run kept, so that a burst of load
    from elsewhere lands on neither side alone."""
    sessions = [runner.session(fp32), runner.session(int8)]
    batches = [runner.feeds(b) for b in _batches(texts)]
    best = np.full((2, len(batches)), np.inf)  # (graph, batch) seconds
    vectors: list[list[np.ndarray]] = [[], []]
    for repeat in range(REPEATS):
        for i, feeds in enumerate(batches):
            for g, session in enumerate(sessions):
                started = time.perf_counter()
                out = runner.run(session, feeds)
                best[g, i] = min(best[g, i], time.perf_counter() - started)
                if repeat == 0:
                    vectors[g].append(out)
    reference, quantized = (np.concatenate(v) for v in vectors)  # (N, D) each
    cosines = np.sum(quantized * reference, axis=1)
    return {
        "path": int8,
        "min_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
        "speedup": round(float(best[0].sum() / best[1].sum()), 3),
    }


def _batches(texts: Sequence[str]) -> list[list[str]]:
    return [list(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]


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

    def feeds(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Padded int64 inputs of one batch: (B, T) each."""
        enc = self._tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
        }

    def session(self, graph: Path) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])

    def run(self, session: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
        wanted = {i.name for i in session.get_inputs()}
        return session.run([OUTPUT], {k: v for k, v in feeds.items() if k in wanted})[0]

    def encode(self, graph: Path, texts: Sequence[str]) -> np.ndarray:
        """Vectors (N, D) of `texts` through `graph`, batches of 32."""
        session = self.session(graph)
        return np.concatenate([self.run(session, self.feeds(b)) for b in _batches(texts)])
