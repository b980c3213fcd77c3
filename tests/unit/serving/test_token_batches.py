"""Token-budget batching (serving/encoders/token_batches.py): model runs are cut by padded tokens,
the encoder honours the cut, and the padding the runs carried is counted on /metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.api.metrics import Metrics
from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.encoder import OnnxTextEncoder
from serving.encoders.slot import ModelSlot
from serving.encoders.token_batches import plan_batches

pytest.importorskip("onnx")
from tests.unit.serving.tiny_model import build_tiny_model, expected_vector  # noqa: E402


def test_a_run_closes_before_one_more_text_would_pass_the_token_budget() -> None:
    lengths = [10, 3, 40, 3, 10, 3]
    batches = plan_batches(lengths, max_tokens=30, max_texts=64)
    # 3 short ones (3 x 3 = 9); a fourth of 10 would make 4 x 10 = 40 > 30: cut.
    # 2 x 10 = 20; the 40-token text alone passes the budget, so it runs alone.
    assert [[lengths[i] for i in b] for b in batches] == [[3, 3, 3], [10, 10], [40]]


def test_count_still_caps_a_run_of_short_texts() -> None:
    batches = plan_batches([2] * 10, max_tokens=1000, max_texts=4)
    assert [len(b) for b in batches] == [4, 4, 2]


def test_an_empty_text_takes_a_row_of_width_one() -> None:
    assert plan_batches([0, 0, 0], max_tokens=2, max_texts=8) == [[0, 1], [2]]


@given(
    st.lists(st.integers(min_value=0, max_value=300), max_size=80),
    st.integers(min_value=1, max_value=4000),
    st.integers(min_value=1, max_value=64),
)
def test_every_text_runs_once_within_the_budget(
    lengths: list[int], max_tokens: int, max_texts: int
) -> None:
    batches = plan_batches(lengths, max_tokens=max_tokens, max_texts=max_texts)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    widths = [[max(1, lengths[i]) for i in b] for b in batches]
    for batch in widths:
        assert len(batch) <= max_texts
        assert len(batch) == 1 or len(batch) * max(batch) <= max_tokens
    flat = [w for batch in widths for w in batch]
    assert flat == sorted(flat)  # length-sorted: neighbours share a run


class _Spy:
    """An onnxruntime session that records the shape of every feed."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.shapes: list[tuple[int, int]] = []

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def get_outputs(self) -> Any:
        return self.session.get_outputs()

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> Any:
        self.shapes.append(feed["input_ids"].shape)
        return self.session.run(names, feed)


TEXTS = ["wing"] * 12 + [" ".join(["boundary layer flow heat shock"] * 3)]  # 12 x 1, 1 x 15


def _encoder(path: Path, max_batch_tokens: int | None) -> tuple[OnnxTextEncoder, _Spy]:
    settings = EncoderSettings(
        runtime=EncoderRuntime.onnxruntime, batch_size=64, max_batch_tokens=max_batch_tokens
    )
    encoder = OnnxTextEncoder.from_dir(path, settings)
    spy = _Spy(encoder._session)
    encoder._session = spy
    return encoder, spy


def test_the_encoder_cuts_runs_by_padded_tokens_and_wastes_less_padding(tmp_path: Path) -> None:
    table = build_tiny_model(tmp_path, max_length=32)
    by_count, count_spy = _encoder(tmp_path, None)
    by_tokens, token_spy = _encoder(tmp_path, 16)
    expected = np.stack([expected_vector(table, t) for t in TEXTS])
    np.testing.assert_allclose(by_tokens.encode(TEXTS), expected, atol=1e-5)
    np.testing.assert_allclose(by_count.encode(TEXTS), expected, atol=1e-5)
    assert count_spy.shapes == [(13, 15)]  # one run: twelve one-word texts padded to 15
    assert token_spy.shapes == [(12, 1), (1, 15)]
    assert all(rows * width <= 16 or rows == 1 for rows, width in token_spy.shapes)
    assert (by_count.tally.real, by_count.tally.padded) == (27, 195)
    assert (by_tokens.tally.real, by_tokens.tally.padded) == (27, 27)
    assert by_tokens.tally.waste == 0.0 and by_count.tally.waste > 0.85


def test_metrics_report_real_and_padded_tokens_across_a_swap(tmp_path: Path) -> None:
    build_tiny_model(tmp_path, max_length=32)
    settings = EncoderSettings(runtime=EncoderRuntime.onnxruntime, max_batch_tokens=None)
    slot = ModelSlot(OnnxTextEncoder.from_dir(tmp_path, settings), name="production")
    metrics = Metrics()
    metrics.watch(slot)
    slot.current.encode(TEXTS)  # type: ignore[union-attr]
    slot.swap(OnnxTextEncoder.from_dir(tmp_path, settings))
    slot.current.encode(TEXTS)  # type: ignore[union-attr]
    text = metrics.render().decode()
    labels = 'side="both",slot="production"'
    assert f'clicktune_encode_tokens_total{{kind="real",{labels}}} 54.0' in text
    assert f'clicktune_encode_tokens_total{{kind="padded",{labels}}} 390.0' in text
