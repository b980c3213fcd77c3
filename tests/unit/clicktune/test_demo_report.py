"""The demo report: the keys the issue names, the supervised share, the table and the plot, and
re-measuring a finished run's references (`clicktune demo --references-only`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from clicktune.demo.loop import RoundResult
from clicktune.demo.report import (
    ReportError,
    build_report,
    finished_run,
    markdown_table,
    missing_references,
    with_references,
    write_report,
)

pytestmark = pytest.mark.unit


def metrics(ndcg: float) -> dict[str, float]:
    return {"ndcg@10": ndcg, "mrr@10": ndcg + 0.1, "recall@100": 0.9, "recall@10": 0.5}


ROUNDS = [
    RoundResult(0, "base", metrics(0.60)),
    RoundResult(1, "v2", metrics(0.66), status="promoted"),
    RoundResult(2, "v2", metrics(0.66), status="rejected"),
]
REFERENCES = {
    "supervised": metrics(0.70),
    "clicks": metrics(0.65),
    "no_ipw": metrics(0.62),
    "base_exact": metrics(0.61),
}


def test_report_has_the_keys_and_the_share_of_the_supervised_uplift() -> None:
    report = build_report("toy", ROUNDS, REFERENCES)
    assert set(report) >= {"dataset", "base", "supervised", "clicks", "no_ipw", "rounds"}
    assert report["base"] == {"ndcg@10": 0.60, "mrr@10": 0.70, "recall@100": 0.9}
    assert [r["model_version"] for r in report["rounds"]] == ["base", "v2", "v2"]
    # live gain 0.06 over a supervised gain of 0.09 measured from the exact-search base
    assert report["supervised_share"] == pytest.approx(0.06 / 0.09)
    # the ablation against its like-for-like counterpart, not against the rounds
    assert report["ipw_gain"] == pytest.approx(0.03)


def test_without_references_there_is_no_share() -> None:
    report = build_report("toy", ROUNDS, {})
    assert report["supervised"] is None and report["supervised_share"] is None
    assert report["ipw_gain"] is None
    assert "supervised uplift" not in markdown_table(report)


def test_written_report_round_trips(tmp_path: Path) -> None:
    report = build_report("toy", ROUNDS, REFERENCES)
    paths = write_report(report, tmp_path)
    assert json.loads(paths[0].read_text()) == report
    table = paths[1].read_text()
    assert "| 1 | v2 | promoted | 0.6600 |" in table and "| ref | no_ipw |" in table
    assert "= 0.667 of the supervised uplift" in table and "| ref | clicks |" in table
    assert "clicks 0.6500 vs no_ipw 0.6200 nDCG@10 (+0.0300)" in table
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scored_candidates_show_beside_the_model_they_were_gated_against(tmp_path: Path) -> None:
    def scored(number: int, status: str, candidate: float, live: float) -> RoundResult:
        return RoundResult(
            number, "v2", metrics(0.66), status, candidate_exact=metrics(candidate),
            live_exact=metrics(live),
        )  # fmt: skip

    rounds = [ROUNDS[0], scored(1, "promoted", 0.7, 0.61), scored(2, "rejected", 0.69, 0.7)]
    report = build_report("toy", rounds, REFERENCES)
    assert report["rounds"][0]["candidate_exact"] is None
    kept = ("ndcg@10", "mrr@10", "recall@100")  # the report's metrics, as for the rounds
    assert report["rounds"][2]["candidate_exact"] == {k: metrics(0.69)[k] for k in kept}
    table = markdown_table(report)
    assert "| rejected | 0.6600 | 0.7600 | 0.9000 | +10.0% | 0.6900 vs 0.7000 (-0.0100) |" in table
    assert "| promoted | 0.6600 | 0.7600 | 0.9000 | +10.0% | 0.7000 vs 0.6100 (+0.0900) |" in table
    assert "the gate never saw these figures" in table
    assert "the gate never saw" not in markdown_table(build_report("toy", ROUNDS, REFERENCES))
    assert write_report(report, tmp_path)[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_references_are_added_to_those_the_run_measured() -> None:
    earlier = build_report("toy", ROUNDS, {"supervised": metrics(0.80)}, run_id="demo-toy-1")
    assert earlier["clicks"] is None and earlier["ipw_gain"] is None
    assert missing_references(earlier) == ["base_exact", "clicks", "no_ipw"]
    found = {k: v for k, v in REFERENCES.items() if k != "supervised"}
    updated = with_references(earlier, found)
    assert updated["rounds"] == earlier["rounds"] and updated["run_id"] == "demo-toy-1"
    assert updated["supervised"]["ndcg@10"] == 0.80  # kept: measured in the run itself
    assert updated["clicks"]["ndcg@10"] == 0.65 and updated["ipw_gain"] == pytest.approx(0.03)
    assert updated["supervised_share"] == pytest.approx(0.06 / 0.19)  # against the new base_exact
    assert missing_references(updated) == []
    assert earlier["clicks"] is None  # the earlier report object is left as it was


def test_a_finished_run_is_read_back_and_a_bad_folder_says_why(tmp_path: Path) -> None:
    report = build_report("toy", ROUNDS, {}, run_id="demo-toy-1")
    write_report(report, tmp_path / "run")
    assert finished_run(tmp_path / "run" / "report.json") == json.loads(json.dumps(report))
    with pytest.raises(ReportError, match="no report at .*needs the folder of a finished"):
        finished_run(tmp_path / "nowhere" / "report.json")
    (tmp_path / "old.json").write_text(json.dumps({**report, "run_id": None}))
    with pytest.raises(ReportError, match="lacks run_id"):
        finished_run(tmp_path / "old.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="lacks a JSON object"):
        finished_run(tmp_path / "list.json")


def test_references_only_without_a_report_fails_before_starting_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--references-only", "--report", str(tmp_path / "empty")]
    )
    assert result.exit_code == 1
    assert f"no report at {tmp_path / 'empty' / 'report.json'}" in result.output
    assert not (tmp_path / "empty").exists()  # no services, no run folder


def test_references_only_for_another_dataset_fails_before_starting_anything(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    earlier = {"run_id": "demo-cisi-1", "dataset": "cisi", "base": metrics(0.3), "rounds": [{}]}
    (run / "report.json").write_text(json.dumps(earlier))
    result = CliRunner().invoke(app, ["demo", "--references-only", "--report", str(run)])
    assert result.exit_code == 1
    assert "is 'products-synth', but the run in" in result.output
    assert "was on 'cisi': pass the run's own --dataset" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["report.json"]  # no run started


def test_a_dataset_that_is_not_a_collection_fails_before_starting_anything(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text("")
    result = CliRunner().invoke(
        app, ["demo", "--dataset", str(tmp_path), "--report", str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "is not a judged collection: missing queries.jsonl, qrels.tsv, split.json" in (
        result.output
    )
    assert not (tmp_path / "out").exists()


def test_each_round_reports_both_stages_of_its_decision() -> None:
    from clicktune.demo.task_figures import decision as _decision

    task = {
        "status": "rejected",
        "reason": "win share - 1/2 -0.0400, Lambda 25.3 >= 20 (alpha=0.05)",
        "metrics": {
            "verdict": "online",
            "gate": {"improvement_per_query": 0.0123, "improvement_lower_bound": -0.0045},
            "online": {"wins": 40, "losses": 61, "ties": 900, "searches": 1001,
                       "decision": "rollback"},
        },
    }  # fmt: skip
    decided = _decision(task)
    assert decided["offline"] == {
        "verdict": "online",
        "improvement_per_query": 0.0123,
        "improvement_lower_bound": -0.0045,
    }
    assert decided["online"]["reason"].startswith("win share")
    rounds = [
        ROUNDS[0],
        RoundResult(1, "base", metrics(0.60), status="rejected", **decided),
    ]
    report = build_report("products-synth", rounds, REFERENCES)
    assert report["rounds"][1]["online"]["wins"] == 40
    table = markdown_table(report)
    assert "| online: +0.0123 (LB -0.0045) | rollback: 40/61/900 in 1001 searches |" in table
    assert _decision({"status": "rejected", "metrics": {}}) == {"offline": None, "online": None}


def test_each_round_reports_how_its_candidate_deploys_and_the_policys_choice() -> None:
    from clicktune.demo.task_figures import deployment

    task = {
        "status": "done",
        "metrics": {
            "side": "query",
            "candidates": {"full": {"gain": 0.031}, "query": {"gain": 0.027}},
            "choice": {"side": "query", "reason": "not above reindex_margin 0.01"},
        },
    }
    deploy = deployment(task)
    assert deploy == {
        "side": "query",
        "reindex": False,
        "choice": {"side": "query", "reason": "not above reindex_margin 0.01"},
        "gains": {"full": 0.031, "query": 0.027},
    }
    rounds = [ROUNDS[0], RoundResult(1, "v1", metrics(0.62), status="promoted", deploy=deploy)]
    report = build_report("products-synth", rounds, REFERENCES, method="query_adapter")
    assert report["method"] == "query_adapter" and report["rounds"][1]["deploy"] == deploy
    assert deployment({"metrics": {"side": "full"}}) == {"side": "full", "reindex": True}
    assert deployment({"metrics": {}}) is None
