from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.judged import DatasetError, load_collection
from tuner.metrics import rank_metrics


def _write_collection(root: Path, qrels_header: str = "query-id\tcorpus-id\tscore") -> Path:
    (root / "corpus.jsonl").write_text(
        "\n".join(json.dumps({"_id": d, "title": "", "text": f"doc {d}"}) for d in "abc") + "\n"
    )
    (root / "queries.jsonl").write_text(
        json.dumps({"_id": "1", "text": "one"})
        + "\n"
        + json.dumps({"_id": "2", "text": "two"})
        + "\n"
    )
    (root / "qrels.tsv").write_text(f"{qrels_header}\n1\ta\t2\n2\tb\t0\n")
    (root / "split.json").write_text(json.dumps({"train": ["1"], "test": ["2"]}))
    return root


def test_collection_loads_and_split_keeps_only_judged_queries(tmp_path: Path) -> None:
    collection = load_collection(_write_collection(tmp_path))
    assert collection.qrels == {"1": {"a": 2}, "2": {"b": 0}}
    assert collection.split_queries("train") == {"1": "one"}
    assert collection.split_queries("test") == {}  # query 2 has no positive judgment
    assert [d["_id"] for d in collection.corpus()] == ["a", "b", "c"]


def test_bad_header_and_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing corpus.jsonl"):
        load_collection(tmp_path)
    _write_collection(tmp_path, qrels_header="qid\tdocid\trel")
    with pytest.raises(DatasetError, match="header"):
        load_collection(tmp_path)


def test_metrics_use_linear_graded_gains_and_count_empty_runs_as_zero() -> None:
    qrels = {"q1": {"d1": 3, "d2": 1}, "q2": {"d9": 1}}
    run = {"q1": {"d2": 0.9, "d1": 0.8, "x": 0.1}}  # q2 returned nothing
    metrics = rank_metrics(qrels, run)
    # q1: DCG = 1/log2(2) + 3/log2(3); IDCG = 3 + 1/log2(3)
    import math

    ndcg_q1 = (1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3))
    assert metrics["ndcg@10"] == pytest.approx(ndcg_q1 / 2)
    assert metrics["mrr@10"] == pytest.approx(0.5)
    assert metrics["recall@100"] == pytest.approx(0.5)
