"""A tiny model directory for tests: a WordLevel tokenizer and an embedding-lookup + mean ONNX
graph (no torch). Row i of the embedding table is the vector of vocabulary word i."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

WORDS = ["[PAD]", "[UNK]", "wing", "lift", "drag", "boundary", "layer", "flow", "heat", "shock"]


def build_tiny_model(
    path: Path,
    *,
    dimension: int = 8,
    token_types: bool = False,
    max_length: int = 16,
    seed: int = 0,
) -> np.ndarray:
    """Write model.onnx, tokenizer.json, clicktune.json under `path`; return the table."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    path.mkdir(parents=True, exist_ok=True)
    table = np.random.default_rng(seed).normal(size=(len(WORDS), dimension)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tok"]),  # (batch, seq, dim)
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "last"], ["mask3"]),  # (batch, seq, 1)
    ]
    inputs = [_int_input("input_ids"), _int_input("attention_mask")]
    if token_types:  # a type embedding, so a wrong token_type_ids feed would change results
        inputs.append(_int_input("token_type_ids"))
        nodes += [
            helper.make_node("Gather", ["types", "token_type_ids"], ["typ"]),
            helper.make_node("Add", ["tok", "typ"], ["emb"]),
        ]
    else:
        nodes.append(helper.make_node("Identity", ["tok"], ["emb"]))
    nodes += [
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["summed"], keepdims=0),  # (batch, dim)
        helper.make_node("ReduceSum", ["mask3", "one"], ["count"], keepdims=0),  # (batch, 1)
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("Mul", ["mean", "mean"], ["sq"]),
        helper.make_node("ReduceSum", ["sq", "one"], ["sqsum"], keepdims=1),
        helper.make_node("Sqrt", ["sqsum"], ["norm"]),
        helper.make_node("Div", ["mean", "norm"], ["sentence_embedding"]),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(np.zeros((2, dimension), np.float32), "types"),
        numpy_helper.from_array(np.array([-1], np.int64), "last"),
        numpy_helper.from_array(np.array([1], np.int64), "one"),
    ]
    output = helper.make_tensor_value_info(
        "sentence_embedding", TensorProto.FLOAT, ["batch", dimension]
    )
    graph = helper.make_graph(nodes, "tiny", inputs, [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path / "model.onnx"))

    vocab = {w: i for i, w in enumerate(WORDS)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path / "tokenizer.json"))
    meta = {
        "format": 1,
        "kind": "text",
        "version": "tiny",
        "dimension": dimension,
        "max_length": max_length,
        "base_model": "tiny",
        "parent": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "metrics": {},
        "parity_min_cosine": 1.0,
    }
    (path / "clicktune.json").write_text(json.dumps(meta))
    return table


def _int_input(name: str):  # type: ignore[no-untyped-def]
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])


def expected_vector(table: np.ndarray, text: str) -> np.ndarray:
    """What the tiny model should output for `text`: mean of word rows, unit length."""
    ids = [WORDS.index(w) if w in WORDS else 1 for w in text.split()]
    mean = table[ids].mean(axis=0)
    return mean / np.linalg.norm(mean)
