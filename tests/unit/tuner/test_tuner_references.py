"""Reference pairs: the supervised yardstick uses the true train judgments; the ablation turns
position-bias correction off and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.config import PropensityKind, TunerSettings
from tuner.judged import load_collection
from tuner.propensity import from_settings
from tuner.references import no_ipw_settings, supervised_pairs

pytestmark = pytest.mark.unit


def write_collection(root: Path) -> Path:
    docs = [{"_id": f"d{i}", "title": f"t{i}", "text": f"x{i}"} for i in range(4)]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    queries = [{"_id": "q1", "text": "one"}, {"_id": "q2", "text": "two"}]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td0\t2\nq1\td1\t0\nq2\td2\t1\n")
    (root / "split.json").write_text(json.dumps({"train": ["q1"], "test": ["q2"]}))
    return root


def test_supervised_pairs_are_the_relevant_train_judgments(tmp_path: Path) -> None:
    pairs = supervised_pairs(load_collection(write_collection(tmp_path)))
    assert [(p.query, p.positive_id, p.weight) for p in pairs] == [("one", "d0", 2.0)]


def test_no_ipw_examines_every_rank_and_keeps_the_rest() -> None:
    settings = TunerSettings(propensity=PropensityKind.em, max_inverse_propensity=7.0)
    ablation = no_ipw_settings(settings)
    propensity = from_settings(ablation, [])
    assert [propensity(k) for k in range(10)] == [1.0] * 10
    assert ablation.max_inverse_propensity == 7.0 and ablation.train == settings.train
