"""Export of a query model: the adapter folded into the frozen encoder's ONNX graph, checked
against torch, registered as "query model over document model" (a tiny random 2-layer BERT)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer

import tuner.export_query as export_query
from serving.encoders.encoder import OnnxTextEncoder
from serving.errors import RegistryError
from serving.models.registry import LocalRegistry
from tests.unit.tuner.test_tuner_query_adapter import HELD_OUT, SETTINGS
from tests.unit.tuner.tiny_encoder import build_tiny_encoder
from tests.unit.tuner.unseen_pairs import DOCS, PAIRS, QUERIES
from tuner.errors import ExportParityError
from tuner.export import export_text_model
from tuner.export_query import export_query_model
from tuner.query_adapter import (
    ADAPTER_FILE,
    QueryAdapter,
    encode_frozen,
    encode_queries,
    fine_tune_query_adapter,
)

UNSEEN = ["moon", "jazz and rust", "zork plugh xyzzy frotz", "sourdough cat box deadline"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[SentenceTransformer, QueryAdapter]:
    texts = [*DOCS.values(), *QUERIES, *HELD_OUT]
    path = build_tiny_encoder(tmp_path_factory.mktemp("tiny"), texts)
    encoder = SentenceTransformer(str(path), device="cpu")
    settings = SETTINGS.model_copy(update={"max_steps": 60})
    return encoder, fine_tune_query_adapter(encoder, PAIRS, DOCS, settings, progress=False).adapter


def export(
    trained: tuple[SentenceTransformer, QueryAdapter], out: Path, document_dir: Path | None = None
) -> dict:
    encoder, adapter = trained
    report = export_query_model(
        encoder,
        adapter,
        out,
        version="q1",
        document_model="v3",
        parent="v3",
        base_model="tiny",
        max_length=32,
        held_out_texts=HELD_OUT + QUERIES,
        document_dir=document_dir,
    )
    return {"report": report, "meta": json.loads((out / "clicktune.json").read_text())}


def served(model_dir: Path, texts: list[str]) -> np.ndarray:
    """What serving's encoder computes from the directory's tokenizer.json and model.onnx."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(32)
    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    return OnnxTextEncoder(session, tokenizer, version="q1", dimension=32, batch_size=3).encode(
        texts
    )


def test_the_folded_graph_embeds_queries_as_the_torch_adapter(trained, tmp_path: Path) -> None:
    encoder, adapter = trained
    out = export(trained, tmp_path / "q1")
    report = out["report"]
    print(f"\nquery model export: parity {report.parity_min_cosine:.7f}, {report.seconds:.1f} s")
    assert report.parity_min_cosine >= 0.9999

    onnx_vectors = served(tmp_path / "q1", UNSEEN)  # texts the parity check never saw
    torch_vectors = encode_queries(encoder, adapter, UNSEEN, 32)
    assert np.sum(onnx_vectors * torch_vectors, axis=1).min() >= 0.9999
    # ... and the adapter is really in the graph: the frozen encoder alone embeds differently.
    base = encode_frozen(encoder, UNSEEN, 32).numpy()
    assert np.sum(onnx_vectors * base, axis=1).min() < 0.99

    graph = onnx.load(str(tmp_path / "q1" / "model.onnx")).graph
    assert [o.name for o in graph.output] == ["sentence_embedding"]
    assert [n.op_type for n in graph.node][-4:] == ["MatMul", "MatMul", "Add", "LpNormalization"]


def test_clicktune_json_and_the_registry_record_the_pairing(trained, tmp_path: Path) -> None:
    meta = export(trained, tmp_path / "q1")["meta"]
    assert meta["kind"] == "query" and meta["document_model"] == "v3" and meta["parent"] == "v3"
    assert meta["query_adapter"] == {"dimension": 32, "rank": 8, "parameters": 512}
    assert meta["dimension"] == 32 and meta["max_length"] == 32
    assert (tmp_path / "q1" / ADAPTER_FILE).is_file() and (tmp_path / "q1" / "st").is_dir()

    version = LocalRegistry(tmp_path / "models").add(tmp_path / "q1")
    assert (version.kind, version.document_model, version.parent) == ("query", "v3", "v3")


def test_a_graph_that_disagrees_with_torch_is_refused_and_not_registrable(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = QueryAdapter(32, 0)
    with torch.no_grad():
        wrong.weight.normal_()
    fold = export_query.fold_adapter
    monkeypatch.setattr(export_query, "fold_adapter", lambda path, _adapter: fold(path, wrong))
    with pytest.raises(ExportParityError, match="minimum cosine"):
        export(trained, tmp_path / "q1")
    assert not (tmp_path / "q1" / "clicktune.json").exists()
    with pytest.raises(RegistryError, match="clicktune.json"):
        LocalRegistry(tmp_path / "models").add(tmp_path / "q1")


@pytest.fixture()
def registered_v3(trained, tmp_path: Path) -> Path:
    """The document model's registered directory: the frozen encoder exported as a text model."""
    encoder, _ = trained
    path = tmp_path / "models" / "v3"
    export_text_model(encoder, path, version="v3", parent=None, base_model="tiny", max_length=32)
    return path


def no_encoder_export(*args: object, **kwargs: object) -> None:
    raise AssertionError("the frozen encoder was exported again")


def test_over_a_registered_document_model_only_the_adapter_is_added_and_checked(
    trained, registered_v3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder, adapter = trained
    graph_before = (registered_v3 / "model.onnx").read_bytes()
    monkeypatch.setattr(export_query, "export_text_model", no_encoder_export)
    out = export(trained, tmp_path / "q1", document_dir=registered_v3)
    assert out["report"].parity_min_cosine >= 0.9999
    assert (out["report"].version, out["report"].dimension) == ("q1", 32)
    assert (out["meta"]["kind"], out["meta"]["document_model"]) == ("query", "v3")
    assert out["meta"]["max_length"] == 32 and out["meta"]["dimension"] == 32

    onnx_vectors = served(tmp_path / "q1", UNSEEN)
    torch_vectors = encode_queries(encoder, adapter, UNSEEN, 32)
    assert np.sum(onnx_vectors * torch_vectors, axis=1).min() >= 0.9999
    assert (registered_v3 / "model.onnx").read_bytes() == graph_before  # the index's graph
    st = SentenceTransformer(str(tmp_path / "q1" / "st"), device="cpu")  # the next round's start
    assert np.allclose(st.encode(UNSEEN), encoder.encode(UNSEEN), atol=1e-6)
    version = LocalRegistry(tmp_path / "registry").add(tmp_path / "q1")
    assert (version.kind, version.document_model) == ("query", "v3")


def test_a_fold_that_disagrees_with_the_torch_adapter_is_refused(
    trained, registered_v3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = QueryAdapter(32, 0)
    with torch.no_grad():
        wrong.weight.normal_()
    fold = export_query.fold_adapter
    monkeypatch.setattr(
        export_query, "fold_adapter", lambda path, _adapter, source=None: fold(path, wrong, source)
    )
    with pytest.raises(ExportParityError, match="minimum cosine"):
        export(trained, tmp_path / "q1", document_dir=registered_v3)
    assert not (tmp_path / "q1" / "clicktune.json").exists()
