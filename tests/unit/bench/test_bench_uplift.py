"""bench/uplift's parts that decide its figures: the sessions it simulates and what it reports.

No model is trained here: a fake embedding ranks the shipped products-synth collection, so the
sessions are checked against rankings known in advance.
"""

from __future__ import annotations

import argparse
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bench import uplift
from tuner.config import TunerSettings
from tuner.judged import load_collection
from tuner.references import corpus_texts

pytestmark = pytest.mark.unit
DATA = Path(__file__).resolve().parents[3] / "datasets" / "products-synth"


class CountingEmbed:
    """A deterministic fake: each text a fixed random unit vector; counts the texts encoded."""

    def __init__(self) -> None:
        self.encoded = 0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        self.encoded += len(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 8)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)


def options(**changes: object) -> argparse.Namespace:
    defaults = {"users_per_query": 2, "randomize": 0.0, "explore_depth": 10, "seed": 0}
    return argparse.Namespace(**{**defaults, **changes})


def test_memoized_encodes_each_distinct_text_once() -> None:
    inner = CountingEmbed()
    embed = uplift.memoized(inner)
    first = embed(["a", "b", "a"])
    again = embed(["b", "c"])
    assert inner.encoded == 3  # a, b, then c
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[1], again[0])


def test_sessions_show_the_embeddings_top_10_per_train_query_and_user() -> None:
    collection = load_collection(DATA)
    texts = corpus_texts(collection)
    embed = CountingEmbed()
    sessions = uplift.simulate_sessions(embed, collection, texts, options())
    train = collection.split_queries("train")
    assert len(sessions) == 2 * len(train)
    doc_ids = sorted(texts)
    doc_vectors = embed([texts[d] for d in doc_ids])
    text_to_qid = {text: qid for qid, text in train.items()}
    for session in sessions[:20]:
        scores = embed([session.user_query])[0] @ doc_vectors.T
        expected = [doc_ids[j] for j in np.argsort(-scores)[:10]]
        assert list(session.hit_ids) == expected
        assert not session.randomized
        assert session.query_id and session.user_query in text_to_qid
        assert all(a.object_id in session.hit_ids for a in session.actions)
    assert any(s.actions for s in sessions)


def test_randomized_share_shows_the_same_hits_shuffled() -> None:
    collection = load_collection(DATA)
    texts = corpus_texts(collection)
    plain = uplift.simulate_sessions(CountingEmbed(), collection, texts, options())
    shuffled = uplift.simulate_sessions(CountingEmbed(), collection, texts, options(randomize=0.5))
    randomized = [s for s in shuffled if s.randomized]
    assert 0.35 < len(randomized) / len(shuffled) < 0.65
    by_query = {s.user_query: set(s.hit_ids) for s in plain}
    assert all(set(s.hit_ids) == by_query[s.user_query] for s in randomized)


def test_an_explore_depth_beyond_10_shows_10_of_the_deeper_top() -> None:
    collection = load_collection(DATA)
    texts = corpus_texts(collection)
    embed = CountingEmbed()
    deep = uplift.simulate_sessions(
        embed, collection, texts, options(randomize=1.0, explore_depth=20, users_per_query=3)
    )
    doc_ids = sorted(texts)
    doc_vectors = embed([texts[d] for d in doc_ids])
    below_the_page = 0
    for session in deep[:60]:
        ranked = np.argsort(-(embed([session.user_query])[0] @ doc_vectors.T))
        top10, top20 = ({doc_ids[j] for j in ranked[:n]} for n in (10, 20))
        assert session.randomized and len(session.hit_ids) == 10
        assert set(session.hit_ids) <= top20
        below_the_page += len(set(session.hit_ids) - top10)
    assert below_the_page > 60 * 3  # about half of each page comes from ranks 11-20


def found(base: float, clicks: float, no_ipw: float, supervised: float) -> dict:
    def metrics(ndcg: float) -> dict:
        return {"ndcg@10": ndcg, "mrr@10": 0.5, "recall@10": 0.4, "recall@100": 0.8}

    trained = {"pairs": 10, "steps": 2, "train_s": 1.0}
    return {
        "base": metrics(base),
        "clicks": {**metrics(clicks), **trained},
        "no_ipw": {**metrics(no_ipw), **trained},
        "supervised": {**metrics(supervised), **trained},
    }


def test_result_reports_the_click_share_of_the_supervised_uplift() -> None:
    result = uplift.bench_result(found(0.40, 0.44, 0.42, 0.48), 120, {"dataset": DATA})
    assert result.ratios["clicks_share_of_supervised_uplift"].value == pytest.approx(0.5)
    assert result.ratios["clicks_over_no_ipw_ndcg"].value == pytest.approx(0.44 / 0.42)
    assert result.figures["supervised_pairs"] == 10
    assert result.params == {"dataset": str(DATA), "sessions": 120}


def test_no_share_when_supervised_does_not_gain() -> None:
    result = uplift.bench_result(found(0.40, 0.41, 0.40, 0.39), 120, {})
    assert "clicks_share_of_supervised_uplift" not in result.ratios
    assert result.ratios["clicks_over_base_ndcg"].value == pytest.approx(0.41 / 0.40)


def test_the_gate_view_is_reported_beside_its_test_metrics() -> None:
    figures = found(0.40, 0.44, 0.42, 0.48)
    gate = {"validation_sessions": 164, "gate_live": 4.06, "gate_improvement": 0.015}
    figures["gated"] = {**figures["clicks"], **gate, "gate_lower_bound": -0.093}
    result = uplift.bench_result(figures, 606, {})
    assert result.figures["gated_ndcg@10"] == 0.44
    assert result.figures["gated_gate_lower_bound"] == -0.093
    assert result.figures["gated_validation_sessions"] == 164


def test_pooled_pairs_are_reported_against_the_per_session_clicks() -> None:
    figures = found(0.40, 0.44, 0.42, 0.48)
    figures["clicks"]["effective_batch"] = 15.5
    figures["pooled"] = {**figures["clicks"], "ndcg@10": 0.462, "effective_batch": 26.4}
    result = uplift.bench_result(figures, 606, {})
    assert result.ratios["pooled_over_clicks_ndcg"].value == pytest.approx(0.462 / 0.44)
    assert result.figures["pooled_effective_batch"] == 26.4
    assert result.figures["clicks_effective_batch"] == 15.5
    assert "no_ipw_effective_batch" not in result.figures
    settings = uplift.pooled_settings(TunerSettings())
    assert settings.train.pooling.enabled and not TunerSettings().train.pooling.enabled
