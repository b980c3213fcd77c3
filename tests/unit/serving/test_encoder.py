from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from serving.config import EncoderSettings
from serving.encoders.encoder import (
    DelegatingEncoder,
    Encoder,
    HashingEncoder,
    OnnxTextEncoder,
    session_options,
    wrapper_chain,
)
from serving.errors import ModelLoadError

pytest.importorskip("onnx")
from tests.unit.serving.tiny_model import build_tiny_model, expected_vector  # noqa: E402

TEXTS = ["wing", "boundary layer flow heat shock", "lift drag", "shock", "heat flow wing lift"]


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, np.ndarray]:
    return tmp_path, build_tiny_model(tmp_path)


def test_encode_matches_the_graph_and_keeps_input_order(tiny) -> None:
    path, table = tiny
    encoder = OnnxTextEncoder.from_dir(path, EncoderSettings(batch_size=2))
    vectors = encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 8)
    expected = np.stack([expected_vector(table, t) for t in TEXTS])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_padding_in_a_batch_does_not_change_a_vector(tiny) -> None:
    path, _ = tiny
    encoder = OnnxTextEncoder.from_dir(path, EncoderSettings(batch_size=64))
    together = encoder.encode(TEXTS)
    alone = np.stack([encoder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_texts_are_truncated_to_max_length(tmp_path: Path) -> None:
    table = build_tiny_model(tmp_path, max_length=16)
    encoder = OnnxTextEncoder.from_dir(tmp_path, EncoderSettings(max_length=8))
    long_text = "wing " * 8 + "shock " * 20
    np.testing.assert_allclose(
        encoder.encode([long_text])[0], expected_vector(table, "wing"), atol=1e-5
    )
    assert encoder.count_tokens([long_text]) == 8


def test_token_type_ids_are_fed_when_the_graph_declares_them(tmp_path: Path) -> None:
    table = build_tiny_model(tmp_path, token_types=True)
    encoder = OnnxTextEncoder.from_dir(tmp_path, EncoderSettings())
    np.testing.assert_allclose(
        encoder.encode(["lift drag"])[0], expected_vector(table, "lift drag"), atol=1e-5
    )


def test_empty_input_gives_an_empty_matrix(tiny) -> None:
    encoder = OnnxTextEncoder.from_dir(tiny[0], EncoderSettings())
    assert encoder.encode([]).shape == (0, 8)


def test_properties_come_from_clicktune_json(tiny) -> None:
    encoder = OnnxTextEncoder.from_dir(tiny[0], EncoderSettings())
    assert (encoder.version, encoder.dimension) == ("tiny", 8)
    assert isinstance(encoder, Encoder)


def test_missing_file_is_named(tiny) -> None:
    (tiny[0] / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="missing tokenizer.json"):
        OnnxTextEncoder.from_dir(tiny[0], EncoderSettings())


def test_wrong_dimension_in_metadata_is_refused_on_first_encode(tiny) -> None:
    meta = json.loads((tiny[0] / "clicktune.json").read_text())
    (tiny[0] / "clicktune.json").write_text(json.dumps({**meta, "dimension": 4}))
    encoder = OnnxTextEncoder.from_dir(tiny[0], EncoderSettings())
    with pytest.raises(ModelLoadError, match="returned dimension 8, but clicktune.json says 4"):
        encoder.encode(["wing"])


def test_thread_settings_reach_onnxruntime() -> None:
    options = session_options(
        EncoderSettings(intra_op_threads=3, inter_op_threads=2, allow_spinning=False)
    )
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 2)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    spinning = session_options(EncoderSettings())
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"


def test_hashing_encoder_is_deterministic_and_unit_length() -> None:
    encoder = HashingEncoder(dimension=32)
    a, b = encoder.encode(["boundary layer flow", ""]), encoder.encode(["boundary layer flow", ""])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    query, near, far = encoder.encode(["boundary layer flow", "boundary layer", "shock tube"])
    assert query @ near > query @ far


def test_wrapper_chain_walks_from_the_outermost_wrapper_in_and_stops_on_a_cycle() -> None:
    model = HashingEncoder(dimension=8)
    middle = DelegatingEncoder(model)
    outer = DelegatingEncoder(middle)
    assert list(wrapper_chain(outer)) == [outer, middle, model]
    assert list(wrapper_chain(None)) == []
    loop = SimpleNamespace()
    loop.inner = loop  # a broken wrapper must not hang whoever looks behind it
    assert len(list(wrapper_chain(loop))) == 16
