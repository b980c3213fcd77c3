"""`clicktune demo` from the command line, one short round on the shipped collection: the real
processes (serve, ingest worker, tuner worker) run the loop and the report has the issue's keys,
and the round's candidate scored on the test queries beside the live model (`--score-candidates`).

Short on purpose (one shopper per query, a few training steps): this checks the plumbing of the
main job, not the uplift, which the demo's own report measures at full length. The gate is set
to send every candidate to the online stage (no direct promotion, a wide non-inferiority
margin), so the round runs an interleaved test on the shoppers' next pass, against the real
servers; one pass is under the test's minimum, so its traffic budget rolls the candidate back.
The references the run skipped are then trained with `--references-only` from the run's stored
sessions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

METRICS = {"ndcg@10", "mrr@10", "recall@100"}


@pytest.mark.timeout(1800)  # two demo processes of up to 900 s each; ~9 min alone
def test_one_demo_round_writes_the_report(services, opensearch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report_dir = tmp_path / "report"
    args = ["demo", "--rounds", "1", "--users-per-query", "1", "--max-steps", "4"]
    args += ["--no-references", "--score-candidates", "--report", str(report_dir)]
    args += ["--online-passes", "1"]
    env = {
        **os.environ,
        "CLICKTUNE_TUNER__GATE__PROMOTE_DIRECTLY": "false",
        "CLICKTUNE_TUNER__GATE__NONINFERIORITY_MARGIN": "0.99",
    }
    done = subprocess.run(
        [sys.executable, "-m", "clicktune", *args],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    report = json.loads((report_dir / "report.json").read_text()) if done.returncode == 0 else {}
    try:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert report["dataset"] == "products-synth" and set(report["base"]) == METRICS
        assert report["supervised"] is None and report["clicks"] is None
        first = report["rounds"][1]
        assert first["round"] == 1 and set(first["metrics"]) == METRICS
        assert first["status"] == "rejected", first
        assert first["traffic"]["searches"] > 100 and first["traffic"]["clicks"] > 0
        # the two stages: offline not worse (as configured), then an interleaved test that the
        # shoppers' next pass fed and the traffic budget ended, leaving the base live
        assert first["offline"]["verdict"] == "online", first
        online = first["online"]
        assert online["decision"] == "rollback" and "ab_max_queries" in online["reason"], online
        assert online["wins"] + online["losses"] + online["ties"] == online["searches"] > 100
        assert online["wins"] + online["losses"] > 0  # clicks credited to the teams
        assert first["traffic"]["online_searches"] >= online["searches"]
        assert "online test after pass 1" in done.stdout
        assert first["model_version"] == "base"
        # the tuner scored its candidate and the live base on the test queries, not deciding
        assert set(first["candidate_exact"]) == METRICS and set(first["live_exact"]) == METRICS
        assert "candidate vs live, exact" in (report_dir / "report.md").read_text()
        assert "round 1: tuner worker" in done.stdout
        tuner_log = (report_dir / "logs" / "tuner-1.log").read_text()
        assert "trigger" in tuner_log.lower()
        assert (report_dir / "uplift.png").stat().st_size > 0
        # the references the run skipped, trained afterwards from its stored sessions
        args = ["demo", "--references-only", "--max-steps", "4", "--report", str(report_dir)]
        later = subprocess.run(
            [sys.executable, "-m", "clicktune", *args], capture_output=True, text=True, timeout=900
        )
        assert later.returncode == 0, later.stdout[-3000:] + later.stderr[-3000:]
        assert "missing from" in later.stdout and "base_exact, supervised, clicks, no_ipw" in (
            later.stdout
        )
        updated = json.loads((report_dir / "report.json").read_text())
        assert updated["rounds"] == report["rounds"] and updated["run_id"] == report["run_id"]
        for name in ("base_exact", "supervised", "clicks", "no_ipw"):
            assert set(updated[name]) == METRICS, name
        assert isinstance(updated["ipw_gain"], float)
        # the worker's exact score of the live base and the base_exact reference: one measure
        assert first["live_exact"]["ndcg@10"] == pytest.approx(
            updated["base_exact"]["ndcg@10"], abs=0.002
        )
        assert "reference clicks: training on" in later.stdout  # pairs from the round's sessions
    finally:
        if report.get("run_id"):
            opensearch.indices.delete(
                index=f"{report['run_id']}*", params={"expand_wildcards": "all"}
            )
