"""Add `model.int8.onnx` to an exported text model only when it ranks like the fp32 graph.

Why a check of its own: `tuner.quantize` keeps the vectors close to fp32 on texts (min cosine),
but what a user notices is the ranking. So after the fp32 export has passed parity, the int8
graph is written, then both graphs are scored through the encoder serving runs
(`serving.encoders.encoder.OnnxTextEncoder`) on the iteration's validation judgments, each query
ranked against the pool of every document shown in validation (its own ten shown hits alone would
give Recall@10 = 1 to any model). The variant stays only if

    Recall@10(fp32) - Recall@10(int8) <= tuner.export.int8_max_recall_drop   and
    min cosine(int8, fp32) on held-out texts >= tuner.export.int8_min_cosine;

otherwise the file is deleted and the reason kept. Calibration texts come from the batch: the
validation query texts and the texts of the documents shown for them, with a quarter of each
held out for the cosine figures. Recall is measured on all validation judgments, so it shares
texts with calibration; calibration only picks which projections and outlier channels go int8
(activation scales are computed per input at run time), so that overlap flatters recall little.

`tuner.export.int8_method: static` makes the file with NNCF instead (tuner/static_int8.py):
calibrated on the same texts, its cosines, speed and recall measured on the runtime it is made
for (OpenVINO when installed), under the same two bounds.

Either way the outcome goes into `clicktune.json` (an "int8" object: kept or not, why, the
figures, the method, the runtime they were measured on, the calibration set and the bounds; and
`int8_*` numbers among its "metrics", which the iteration also puts in the lineage and the
MLflow run). Quantising is
an optimisation: any error in it is logged and the version is registered fp32 only. CLIP models
are skipped: the quantiser handles text graphs only.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from tuner import progress
from tuner.config import ExportSettings, Int8Method
from tuner.quantize import INT8_FILE, QuantReport, quantize_text_model
from tuner.session_eval import Embed, SessionJudgments, evaluate_sessions

__all__ = ["Int8Outcome", "Quantize", "add_int8_variant", "calibration_split"]

log = logging.getLogger(__name__)

META_FILE = "clicktune.json"
RECALL = "recall@10"
HOLD_OUT_EVERY = 4  # one text in four of each kind (queries, documents) is held out
MAX_PER_KIND = 64  # calibration texts per kind: each selection step encodes them all again
SEED = 0

Quantize = Callable[..., QuantReport]  # the signature of `tuner.quantize.quantize_text_model`


@dataclass(frozen=True)
class Int8Outcome:
    """Whether `model.int8.onnx` was kept, why, and the figures the decision rests on."""

    kept: bool
    reason: str
    min_cosine: float | None = None  # held-out texts, int8 vs fp32 ONNX
    mean_cosine: float | None = None
    recall_fp32: float | None = None  # Recall@10 on the validation judgments
    recall_int8: float | None = None
    speedup: float | None = None  # fp32 seconds / int8 seconds on the held-out texts
    quantized_groups: tuple[str, ...] = ()  # projection roles that went int8
    method: str = Int8Method.dynamic.value
    runtime: str = "onnxruntime"  # where the figures were measured: what the variant is for
    calibration: dict[str, Any] | None = None  # source and counts of the calibration texts
    bounds: dict[str, float] | None = None  # the two bounds it was held to

    def metadata(self) -> dict[str, Any]:
        """The "int8" object of `clicktune.json`."""
        figures = {
            "min_cosine": self.min_cosine,
            "mean_cosine": self.mean_cosine,
            "recall@10_fp32": self.recall_fp32,
            "recall@10_int8": self.recall_int8,
            "speedup": self.speedup,
        }
        kept = {"kept": self.kept, "file": INT8_FILE if self.kept else None}
        groups = {"quantized_groups": list(self.quantized_groups)}
        how = {"method": self.method, "runtime": self.runtime}
        sets = {"calibration": self.calibration, "bounds": self.bounds}
        return {**kept, "reason": self.reason, **_rounded(figures), **groups, **how, **sets}

    def metrics(self) -> dict[str, float]:
        """`int8_*` numbers for the lineage metrics (only the figures that were measured)."""
        figures = {k: v for k, v in self.metadata().items() if isinstance(v, float)}
        sizes = {k: v for k, v in (self.calibration or {}).items() if k != "source"}
        counts = {f"int8_calibration_{k}": float(v) for k, v in sizes.items()}
        bounds = {f"int8_bound_{k}": v for k, v in (self.bounds or {}).items()}
        return {
            "int8_kept": 1.0 if self.kept else 0.0,
            "int8_static": 1.0 if self.method == Int8Method.static.value else 0.0,
            **{f"int8_{k}": v for k, v in figures.items()},
            **counts,
            **bounds,
        }


def add_int8_variant(
    model_dir: Path,
    judgments: SessionJudgments,
    doc_texts: Mapping[str, Any],
    settings: ExportSettings,
    *,
    max_length: int,
    quantize: Quantize | None = None,
) -> Int8Outcome | None:
    """Write, check and keep or drop `model_dir/model.int8.onnx`; None when none is attempted.

    Records the outcome in `model_dir/clicktune.json`; never raises for a quantiser failure.
    `quantize` defaults to `tuner.quantize.quantize_text_model`, looked up at call time.
    """
    if not settings.int8:
        return None
    meta = _read_meta(model_dir)
    if meta.get("kind") != "text":
        log.info("int8 variant skipped: %s models are served fp32 only", meta.get("kind"))
        return None
    try:
        outcome = _quantize_and_check(
            model_dir, judgments, doc_texts, settings, max_length, quantize or _quantizer(settings)
        )
    except Exception as exc:  # quantiser and onnxruntime raise many types; fp32 still serves
        (model_dir / INT8_FILE).unlink(missing_ok=True)
        log.warning("int8 variant failed, registering fp32 only: %s: %s", type(exc).__name__, exc)
        reason = f"quantisation failed: {type(exc).__name__}: {exc}"
        outcome = Int8Outcome(False, reason, method=settings.int8_method.value)
    _record(model_dir, meta, outcome)
    return outcome


def _quantizer(settings: ExportSettings) -> Quantize:
    if settings.int8_method is Int8Method.static:
        from tuner.static_int8 import quantize_static  # nncf loads only when asked for

        return quantize_static
    return quantize_text_model


def _runtime(settings: ExportSettings) -> str:
    """The runtime a variant of `settings.int8_method` is made for and measured on."""
    if settings.int8_method is Int8Method.static:
        from tuner.static_int8 import check_runtime

        return check_runtime().value
    return "onnxruntime"


def calibration_split(
    judgments: SessionJudgments, doc_texts: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """(calibration, held-out) texts: validation queries and shown documents, a quarter of
    each kind held out, at most `MAX_PER_KIND` of each kind for calibration."""
    queries = sorted(set(judgments.queries.values()))
    docs = sorted({t for d in judgments.doc_ids if isinstance(t := doc_texts.get(d), str) and t})
    calibration: list[str] = []
    held_out: list[str] = []
    for texts in (queries, docs):
        random.Random(SEED).shuffle(texts)
        held = set(range(0, len(texts), HOLD_OUT_EVERY)) if len(texts) > 1 else set()
        calibration += [t for i, t in enumerate(texts) if i not in held][:MAX_PER_KIND]
        held_out += [t for i, t in enumerate(texts) if i in held][: MAX_PER_KIND // 2]
    return calibration, held_out


def _quantize_and_check(
    model_dir: Path,
    judgments: SessionJudgments,
    doc_texts: Mapping[str, Any],
    settings: ExportSettings,
    max_length: int,
    quantize: Quantize,
) -> Int8Outcome:
    if not judgments.qrels:
        return Int8Outcome(False, "no validation judgments to compare Recall@10 on")
    calibration, held_out = calibration_split(judgments, doc_texts)
    # steps: quantise (the greedy selection logs each trial), Recall@10 of fp32, then of int8
    with progress.stage("int8", "step", 3) as steps:
        report = quantize(
            model_dir,
            model_dir,
            calibration,
            min_cosine=settings.int8_min_cosine,
            eval_texts=held_out or None,
            max_length=max_length,
        )
        steps.advance(last="quantize", min_cosine=f"{report.min_cosine:.5f}")
        texts = {d: t for d, t in doc_texts.items() if isinstance(t, str)}
        runtime = _runtime(settings)
        fp32, int8 = (_onnx_embed(model_dir, v, max_length, runtime) for v in ("fp32", "int8"))
        recall_fp32 = evaluate_sessions(fp32, judgments, texts, rank_against="pool")
        steps.advance(last="recall_fp32")
        recall_int8 = evaluate_sessions(int8, judgments, texts, rank_against="pool")
        steps.advance(last="recall_int8")
    outcome = replace(
        _decide(report, recall_fp32[RECALL], recall_int8[RECALL], settings),
        method=settings.int8_method.value,
        runtime=runtime,
        calibration=_calibration_record(judgments, calibration, held_out),
        bounds={
            "min_cosine": settings.int8_min_cosine,
            "max_recall_drop": settings.int8_max_recall_drop,
        },
    )
    if not outcome.kept:
        (model_dir / INT8_FILE).unlink(missing_ok=True)
    log.info("int8 variant %s: %s", "kept" if outcome.kept else "dropped", outcome.reason)
    return outcome


def _calibration_record(
    judgments: SessionJudgments, calibration: list[str], held_out: list[str]
) -> dict[str, Any]:
    """Where the calibration texts came from and how many of each kind (never test queries)."""
    queries = set(judgments.queries.values())
    asked = sum(t in queries for t in calibration)
    return {
        "source": "validation sessions: their queries and the documents shown for them",
        "queries": asked,
        "documents": len(calibration) - asked,
        "held_out": len(held_out),
    }


def _decide(
    report: QuantReport, recall_fp32: float, recall_int8: float, settings: ExportSettings
) -> Int8Outcome:
    """Keep int8 when both bounds hold; the reason names the figures and the bound broken."""
    drop = recall_fp32 - recall_int8
    broken = []
    if report.min_cosine < settings.int8_min_cosine:
        broken.append(
            f"held-out min cosine {report.min_cosine:.5f} < tuner.export.int8_min_cosine "
            f"{settings.int8_min_cosine}"
        )
    if drop > settings.int8_max_recall_drop + 1e-9:  # tolerance: recalls are float ratios
        broken.append(
            f"Recall@10 drop {drop:.4f} (fp32 {recall_fp32:.4f}, int8 {recall_int8:.4f}) > "
            f"tuner.export.int8_max_recall_drop {settings.int8_max_recall_drop}"
        )
    reason = "; ".join(broken) or (
        f"Recall@10 fp32 {recall_fp32:.4f}, int8 {recall_int8:.4f}; held-out min cosine "
        f"{report.min_cosine:.5f}; {report.speedup:.2f}x fp32 speed"
    )
    return Int8Outcome(
        kept=not broken,
        reason=reason,
        min_cosine=report.min_cosine,
        mean_cosine=report.mean_cosine,
        recall_fp32=recall_fp32,
        recall_int8=recall_int8,
        speedup=report.speedup,
        quantized_groups=report.quantized_groups,
    )


def _onnx_embed(
    model_dir: Path, variant: Literal["fp32", "int8"], max_length: int, runtime: str
) -> Embed:
    """`Embed` through serving's encoder on `runtime`, so recall is measured on what serving
    will run: onnxruntime for the dynamic variant (its quantisation), the static one's own."""
    from serving.config import EncoderRuntime, EncoderSettings
    from serving.encoders.encoder import OnnxTextEncoder

    settings = EncoderSettings(
        variant=variant, max_length=max_length, runtime=EncoderRuntime(runtime)
    )
    encoder = OnnxTextEncoder.from_dir(model_dir, settings)
    return lambda texts: encoder.encode(list(texts))


def _read_meta(model_dir: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((model_dir / META_FILE).read_text())
    return meta


def _record(model_dir: Path, meta: dict[str, Any], outcome: Int8Outcome) -> None:
    meta["int8"] = outcome.metadata()
    meta["metrics"] = {**meta.get("metrics", {}), **outcome.metrics()}
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _rounded(figures: Mapping[str, float | None]) -> dict[str, float | None]:
    return {k: None if v is None else round(float(v), 6) for k, v in figures.items()}
