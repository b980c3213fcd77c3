"""bench/run_all's tables: a bench JSON read back, failures kept, targets judged, cells escaped.

No bench runs here: the outcomes are built from fake bench JSON files, as `run_all` would judge
them after the subprocess ended.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench import run_all
from bench.report import Outcome, format_value, markdown, outcome, tail_lines
from bench.results import BenchFormatError, BenchResult, Ratio, parse_target

pytestmark = pytest.mark.unit

MACHINE = {
    "date": "2026-01-01T00:00:00+00:00",
    "git_commit": "abc123",
    "cpu_model": "Fake CPU",
    "cores": 2,
    "memory_gib": 8.0,
    "gpus": [],
}
INGEST: dict[str, Any] = {
    "bench": "ingest",
    "figures": {"worker": 8123.4, "raw_bulk_mean": 9001.0, "worker_retries": 0},
    "units": {"worker": "records/s", "raw_bulk_mean": "records/s", "worker_retries": "retries"},
    "ratios": {
        "worker_over_raw_bulk": {"value": 0.9025, "target": ">=0.8"},
        "worker_over_raw_parallel_bulk": {"value": 0.61, "target": None},
    },
    "params": {"records": 10000},
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(data))
    return path


def test_a_bench_json_round_trips_through_the_result() -> None:
    result = BenchResult.from_json(INGEST)
    assert result.to_json() == INGEST
    assert result.ratios["worker_over_raw_bulk"].met is True
    assert result.ratios["worker_over_raw_parallel_bulk"].met is None


@pytest.mark.parametrize(
    ("value", "target", "met"),
    [
        (1.6, ">=1.5", True),
        (1.4, ">=1.5", False),
        (0.4, "<=0.5", True),
        (0.6, "<=0.5x", False),
        (2.0, ">= 2x", True),
    ],
)
def test_targets_are_judged_in_their_direction(value: float, target: str, met: bool) -> None:
    assert Ratio(value, target).met is met


def test_a_bad_target_names_the_value_and_the_rule() -> None:
    with pytest.raises(BenchFormatError, match=r"'=>1\.5'.*'>=X' or '<=X'"):
        parse_target("=>1.5")


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ({**INGEST, "units": {"worker": "records/s"}}, "needs a unit"),
        ({**INGEST, "figures": {**INGEST["figures"], "worker": "fast"}}, "'fast'"),
        ({**INGEST, "figures": {**INGEST["figures"], "worker": float("nan")}}, "finite"),
        ({**INGEST, "ratios": {"r": 0.9}}, "ratio 'r'"),
        ({"figures": {}}, "string 'bench'"),
    ],
)
def test_a_json_that_breaks_the_shape_is_refused(broken: dict, message: str) -> None:
    with pytest.raises(BenchFormatError, match=message):
        BenchResult.from_json(broken)


def test_exit_zero_with_good_json_is_ok(tmp_path: Path) -> None:
    judged = outcome("ingest", 0, 12.0, write(tmp_path, INGEST), "")
    assert judged.ok and judged.result is not None
    assert judged.result.figures["worker"] == 8123.4


@pytest.mark.parametrize(
    ("returncode", "exists", "reason"),
    [(1, True, "exit status 1"), (None, True, "timed out after 12 s"), (0, False, "no ")],
)
def test_failures_say_why_and_keep_the_stderr_tail(
    tmp_path: Path, returncode: int | None, exists: bool, reason: str
) -> None:
    path = write(tmp_path, INGEST) if exists else tmp_path / "missing.json"
    log = "\n".join(f"line {i}" for i in range(20)) + "\nKafkaError: <no broker> | down\n"
    judged = outcome("ingest", returncode, 12.0, path, log)
    assert not judged.ok and reason in (judged.failure or "")
    assert judged.tail[-1] == "KafkaError: <no broker> | down" and len(judged.tail) == 8


def test_a_json_of_the_wrong_shape_is_a_failure(tmp_path: Path) -> None:
    judged = outcome("ingest", 0, 1.0, write(tmp_path, {"bench": "ingest"}), "")
    assert not judged.ok and "bad JSON" in (judged.failure or "")


def test_the_markdown_has_figures_ratios_and_the_failed_bench() -> None:
    failed = Outcome("train", 3.0, failure="exit status 1", tail=["OSError: <disk> | full"])
    table = markdown(
        [Outcome("ingest", 20.0, BenchResult.from_json(INGEST)), failed], MACHINE, True
    )
    assert "| ingest | worker | 8,123 | records/s |" in table
    assert "| ingest | worker_retries | 0 | retries |" in table
    assert "| ingest | worker_over_raw_bulk | 0.9025 | >=0.8 | met |" in table
    assert "| ingest | worker_over_raw_parallel_bulk | 0.61 |  | no target |" in table
    # the stderr tail is escaped: no raw pipe or tag to break the table
    assert "| train | FAILED | exit status 1<br>OSError: &lt;disk&gt; \\| full | |" in table
    assert "| ingest | ok | 20 s | records=10000 |" in table
    assert "commit abc123" in table and "quick sizes" in table


def test_a_missed_target_reads_missed() -> None:
    data = {**INGEST, "ratios": {"p99_over_peer": {"value": 0.5004, "target": "<=0.5"}}}
    table = markdown([Outcome("serving", 1.0, BenchResult.from_json(data))], MACHINE, False)
    assert "| serving | p99_over_peer | 0.5004 | <=0.5 | missed |" in table


@pytest.mark.parametrize(
    ("value", "shown"), [(12345.6, "12,346"), (123.45, "123.5"), (0.99871, "0.9987"), (42, "42")]
)
def test_values_are_shown_with_readable_digits(value: float, shown: str) -> None:
    assert format_value(value) == shown


def test_progress_bar_carriage_returns_split_the_tail() -> None:
    assert tail_lines("a\r 50%\r100%\n\nboom\n", 2) == ["100%", "boom"]


def test_only_filters_in_bench_order_and_refuses_unknown_names() -> None:
    assert [b.name for b in run_all.select("train, ingest")] == ["ingest", "train"]
    with pytest.raises(SystemExit, match="'nope'"):
        run_all.select("ingest,nope")


def test_quick_and_skip_infinity_reach_only_their_benches() -> None:
    serving, reindex = (
        next(b for b in run_all.BENCHES if b.name == n) for n in ("serving", "reindex")
    )
    assert run_all.bench_argv(serving, True, True) == ["--quick", "--skip-infinity"]
    assert "--skip-infinity" not in run_all.bench_argv(reindex, True, True)
    assert "--import-base" in run_all.bench_argv(reindex, False, False)
