"""int8 variant: only weight MatMuls are quantised, and vectors stay close to fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.config import EncoderSettings
from serving.encoders.encoder import OnnxTextEncoder
from tuner.errors import ExportError
from tuner.quantize import INT8_FILE, quantize_text_model

WORDS = ["[PAD]", "[UNK]", "wing", "lift", "drag", "boundary", "layer", "flow", "heat", "shock"]
TEXTS = ["wing lift", "boundary layer flow", "heat shock", "drag", "flow over a wing", "shock"]


def build_projection_model(path: Path, dim: int = 32, layers: int = 2) -> None:
    """Embedding lookup -> `layers` x (MatMul + Relu) -> masked mean -> L2 normalise."""
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    rng = np.random.default_rng(0)
    path.mkdir(parents=True)
    inits = [numpy_helper.from_array(rng.normal(size=(len(WORDS), dim)).astype(np.float32), "emb")]
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["h0"], name="embeddings/Gather")]
    for i in range(layers):
        weight = (rng.normal(size=(dim, dim)) / np.sqrt(dim)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes += [
            helper.make_node(
                "MatMul", [f"h{i}", f"w{i}"], [f"m{i}"], name=f"layer.{i}/dense/MatMul"
            ),
            helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"], name=f"layer.{i}/Relu"),
        ]
    inits += [
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    h = f"h{layers}"
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),
        helper.make_node("Mul", [h, "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "one"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("LpNormalization", ["mean"], ["sentence_embedding"], axis=1, p=2),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask")
    ]
    output = helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dim])
    graph = helper.make_graph(nodes, "proj", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path / "model.onnx"))
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path / "tokenizer.json"))
    meta = {
        "format": 1,
        "kind": "text",
        "version": "proj",
        "dimension": dim,
        "max_length": 16,
        "base_model": "proj",
        "parent": None,
        "created_at": "2026-01-01T00:00:00Z",
        "metrics": {},
        "parity_min_cosine": 1.0,
    }
    (path / "clicktune.json").write_text(json.dumps(meta))


def test_int8_variant_keeps_vectors_and_serving_loads_it(tmp_path: Path) -> None:
    import onnx

    build_projection_model(tmp_path / "m")
    report = quantize_text_model(tmp_path / "m", tmp_path / "m", TEXTS, min_cosine=0.99)
    assert report.path == tmp_path / "m" / INT8_FILE and report.path.is_file()
    assert report.min_cosine >= 0.99 and report.mean_cosine >= report.min_cosine
    assert report.quantized_groups == ("layer.*/dense/MatMul",) and report.speedup > 0
    ops = {n.op_type for n in onnx.load(str(report.path)).graph.node}
    assert "Gather" in ops and "MatMul" not in ops  # embedding stays fp32, projections int8

    fp32 = OnnxTextEncoder.from_dir(tmp_path / "m", EncoderSettings())
    int8 = OnnxTextEncoder.from_dir(tmp_path / "m", EncoderSettings(variant="int8"))
    cosines = np.sum(fp32.encode(TEXTS) * int8.encode(TEXTS), axis=1)
    assert cosines.min() >= 0.99 and not np.allclose(cosines, 1.0, atol=1e-7)


def test_int8_falls_back_to_fp32_when_the_version_has_no_int8_file(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    build_projection_model(tmp_path / "m")
    with caplog.at_level("INFO", logger="serving.encoders.encoder"):
        int8 = OnnxTextEncoder.from_dir(tmp_path / "m", EncoderSettings(variant="int8"))
    fp32 = OnnxTextEncoder.from_dir(tmp_path / "m", EncoderSettings())
    assert np.allclose(int8.encode(TEXTS), fp32.encode(TEXTS))
    assert "serving the fp32 model.onnx" in caplog.text


def test_an_impossible_bound_is_refused_with_the_numbers(tmp_path: Path) -> None:
    build_projection_model(tmp_path / "m")
    with pytest.raises(ExportError, match=r"min cosine >= 1.0001"):
        quantize_text_model(tmp_path / "m", tmp_path / "out", TEXTS, min_cosine=1.0001)
    assert not (tmp_path / "out" / INT8_FILE).exists()
