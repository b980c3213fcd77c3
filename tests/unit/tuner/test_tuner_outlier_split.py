"""Outlier channels split off to fp32: exact before quantising, and int8 bends less after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.unit.tuner.test_tuner_quantize import TEXTS, WORDS, build_projection_model
from tuner.outlier_split import split_outliers
from tuner.quantize import _quantize, _Runner, _weight_matmul_groups

OUTLIER_CHANNEL = 5


def with_massive_activation(path: Path) -> None:
    """One word carries a huge value in one channel, like MiniLM's [CLS] in channel 99."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path / "model.onnx"))
    emb = next(i for i in model.graph.initializer if i.name == "emb")
    table = numpy_helper.to_array(emb).copy()
    table[WORDS.index("wing"), OUTLIER_CHANNEL] = 40.0
    emb.CopyFrom(numpy_helper.from_array(table, "emb"))
    onnx.save(model, str(path / "model.onnx"))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    build_projection_model(tmp_path / "m")
    with_massive_activation(tmp_path / "m")
    return tmp_path / "m"


def test_split_is_exact_in_fp32_and_finds_the_outlier(model: Path, tmp_path: Path) -> None:
    runner = _Runner(model / "tokenizer.json", 16)
    nodes = [n for names in _weight_matmul_groups(model / "model.onnx").values() for n in names]
    split = tmp_path / "split.onnx"
    channels = split_outliers(model / "model.onnx", split, nodes, [runner.feeds(TEXTS)])
    assert OUTLIER_CHANNEL in channels["h0"]
    before = runner.encode(model / "model.onnx", TEXTS)
    assert np.allclose(runner.encode(split, TEXTS), before, atol=1e-5)


def test_int8_after_the_split_bends_less_than_without(model: Path, tmp_path: Path) -> None:
    runner = _Runner(model / "tokenizer.json", 16)
    nodes = [n for names in _weight_matmul_groups(model / "model.onnx").values() for n in names]
    split = tmp_path / "split.onnx"
    split_outliers(model / "model.onnx", split, nodes, [runner.feeds(TEXTS)])
    _quantize(model / "model.onnx", tmp_path / "plain.int8.onnx", nodes)
    _quantize(split, tmp_path / "split.int8.onnx", nodes)
    reference = runner.encode(model / "model.onnx", TEXTS)
    plain = np.sum(runner.encode(tmp_path / "plain.int8.onnx", TEXTS) * reference, axis=1)
    kept = np.sum(runner.encode(tmp_path / "split.int8.onnx", TEXTS) * reference, axis=1)
    assert kept.min() > plain.min()
    assert 1 - kept.min() < (1 - plain.min()) / 2  # at least half the damage is gone


def test_a_ratio_that_flags_every_channel_is_refused(model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"outlier ratio must be > 1.*got 0.5"):
        split_outliers(model / "model.onnx", tmp_path / "s.onnx", [], [], ratio=0.5)
