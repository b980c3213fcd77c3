"""Progress lines of long tuner stages (`tuner.progress`), and the worker's use of them: every
line names the task, at most one per `progress_interval_s`, the online test against its budget."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from serving.state.tasks import OpenSearchTaskStore, new_task
from tests.unit.serving.task_fakes import FakeOpenSearch
from tests.unit.tuner.worker_fakes import FakeStages
from tuner import progress
from tuner.config import RolloutMode, WorkerSettings
from tuner.progress import ProgressLog, format_duration, in_slices, progress_line, reporting
from tuner.session_eval import Scorer, SessionJudgments, SessionOutcomes
from tuner.worker.lock import LeaseLostError
from tuner.worker.runner import TaskRunner


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _reporter(interval_s: float = 5.0) -> tuple[ProgressLog, list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    return ProgressLog(lines.append, interval_s, clock), lines, clock


def test_a_stage_logs_its_start_then_at_most_one_line_per_interval_then_its_end() -> None:
    reporter, lines, clock = _reporter(interval_s=5.0)
    with reporter.stage("training", "step", 100) as steps:
        for _ in range(30):  # a step every 0.5 s: 15 s in all
            clock.now += 0.5
            steps.advance()
    assert lines[0] == "stage=training step=0/100 started"
    assert [line.split()[1] for line in lines[1:-1]] == [f"step={n}/100" for n in (10, 20, 30)]
    assert lines[-1] == "stage=training step=30/100 steps/s=2.0 done in 15s"


def test_rate_and_eta_count_units_per_second_and_what_is_left_at_that_rate() -> None:
    reporter, lines, clock = _reporter(interval_s=0.0)
    steps = reporter.stage("training", "step", 400, rate_unit="pairs", per_unit=32).start()
    clock.now += 10.0
    steps.update(100, loss="0.4231")  # 10 steps/s: 320 pairs/s, 300 steps left: 30 s
    assert lines[-1] == "stage=training step=100/400 pairs/s=320.0 eta=30s loss=0.4231"
    clock.now += 290.0
    steps.update(200)  # 200 steps in 300 s: 200 left take 300 s more
    assert lines[-1] == "stage=training step=200/400 pairs/s=21.3 eta=5m00s loss=0.4231"


def test_a_stage_resumed_midway_counts_its_rate_from_where_it_restarted() -> None:
    reporter, lines, clock = _reporter(interval_s=0.0)
    docs = reporter.stage("reindexing", "doc")
    docs.update(5000, 10000)  # the copy resumes at its checkpoint: the start line
    clock.now += 10.0
    docs.update(6000, 10000)
    docs.finish()
    assert lines[0] == "stage=reindexing doc=5000/10000 started"
    assert lines[1] == "stage=reindexing doc=6000/10000 docs/s=100.0 eta=40s"
    assert lines[2] == "stage=reindexing doc=6000/10000 docs/s=100.0 done in 10s"


def test_a_failing_stage_says_where_it_stopped_and_its_error_goes_on() -> None:
    reporter, lines, clock = _reporter()
    with pytest.raises(ValueError, match="broke"), reporter.stage("export", "step", 3) as steps:
        clock.now += 2.0
        steps.advance()
        raise ValueError("broke")
    assert lines[-1] == "stage=export step=1/3 steps/s=0.5 stopped: ValueError"


def test_a_refused_line_does_not_hide_the_stage_error() -> None:
    def say(line: str) -> None:
        if "stopped" in line:
            raise LeaseLostError("lease lost")

    with pytest.raises(ValueError), ProgressLog(say).stage("scoring", "text", 10):
        raise ValueError("the real error")


def test_stages_report_through_the_bound_reporter_else_the_module_logger(caplog) -> None:  # type: ignore[no-untyped-def]
    reporter, lines, _ = _reporter()
    with reporting(reporter), progress.stage("scoring", "text", 2):
        pass
    assert lines == ["stage=scoring text=0/2 started", "stage=scoring text=0/2 done in 0s"]
    caplog.set_level(logging.INFO, logger="tuner.progress")
    with progress.stage("scoring", "text", 2):
        pass
    assert "stage=scoring text=0/2 started" in caplog.text


def test_in_slices_reports_a_long_call_as_it_goes_and_joins_the_parts() -> None:
    reporter, lines, clock = _reporter(interval_s=0.0)
    calls: list[int] = []

    def embed(texts):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        clock.now += 1.0
        return np.array([[float(len(t))] for t in texts])

    texts = [f"t{i}" for i in range(25)]
    with reporter.stage("scoring", "text", 25) as done:
        vectors = in_slices(embed, done, np.concatenate, size=10)(texts)
    assert calls == [10, 10, 5]
    assert np.array_equal(vectors, np.array([[float(len(t))] for t in texts]))
    assert [line.split()[1] for line in lines[1:4]] == ["text=10/25", "text=20/25", "text=25/25"]


def test_a_scoring_pass_counts_every_text_it_embeds_up_to_its_total() -> None:
    judgments = SessionJudgments(
        queries={"q1": "red shoes", "q2": "blue hat"},
        candidates={"q1": ["d1", "d2"], "q2": ["d2", "d3"]},
        qrels={"q1": {"d1": 1}, "q2": {"d3": 2}},
        outcomes=(SessionOutcomes("q1", ("d1", "d2"), {"d1": 1.0}),),
    )
    docs = {"d1": "red running shoes", "d2": "a scarf", "d3": "a blue hat"}

    def embedder(model: object):  # type: ignore[no-untyped-def]
        return lambda texts: np.eye(8, dtype=np.float32)[[len(t) % 8 for t in texts]]

    reporter, lines, _ = _reporter(interval_s=0.0)
    with reporting(reporter):
        Scorer(judgments, docs, embedder=embedder)(None)
    assert lines[0] == "stage=scoring text=0/5 started"  # 3 documents, 2 queries
    assert lines[-1].startswith("stage=scoring text=5/5 ") and "done in" in lines[-1]


def test_the_online_line_counts_searches_against_the_budget_and_the_deadline() -> None:
    line = progress_line(
        "online_test",
        "search",
        300,
        20_000,
        600.0,
        rate_unit="searches",
        eta_cap_s=3600.0,
        extra={"wins": 120, "losses": 100, "ties": 80},
    )  # 0.5 searches/s leaves 39400 s for the budget; the deadline comes first
    assert line == (
        "stage=online_test search=300/20000 searches/s=0.5 eta=1h00m wins=120 losses=100 ties=80"
    )
    assert progress_line("online_test", "search", 0, None, 5.0, eta_cap_s=-3.0) == (
        "stage=online_test search=0 eta=0s"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (8.2, "8s"), (125, "2m05s"), (3720, "1h02m")]
)
def test_durations_read_in_two_units_at_most(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- the worker ----------------------------------------------------------------------------------
def _runner(stages: FakeStages, settings: WorkerSettings, **kwargs) -> tuple[TaskRunner, str]:  # type: ignore[no-untyped-def]
    store = OpenSearchTaskStore(FakeOpenSearch(), "tasks")  # type: ignore[arg-type]
    task = store.create(new_task("m"))[0]
    return TaskRunner(store, stages, settings, "w1", **kwargs), task.id


def _train_steps(clock: Clock, steps: int = 20) -> None:
    with progress.stage("training", "step", steps) as done:
        for _ in range(steps):
            clock.now += 1.0
            done.advance()


def test_the_worker_logs_each_stage_line_with_its_task_at_the_configured_interval(caplog) -> None:  # type: ignore[no-untyped-def]
    clock, stages = Clock(), FakeStages()
    stages.on_train = lambda: _train_steps(clock)
    settings = WorkerSettings(rollout=RolloutMode.promote, progress_interval_s=10.0)
    runner, task_id = _runner(stages, settings, monotonic=clock)
    caplog.set_level(logging.INFO, logger="tuner.worker.runner")
    runner.run(runner.store.get(task_id))
    lines = [r.getMessage() for r in caplog.records if "stage=training" in r.getMessage()]
    assert lines == [
        f"task {task_id}: stage=training step=0/20 started",
        f"task {task_id}: stage=training step=10/20 steps/s=1.0 eta=10s",
        f"task {task_id}: stage=training step=20/20 steps/s=1.0 eta=0s",
        f"task {task_id}: stage=training step=20/20 steps/s=1.0 done in 20s",
    ]


def test_a_worker_that_lost_its_lease_stops_training_at_the_next_progress_line() -> None:
    class LostDuringTraining:
        lost = False

        def check(self, action: str) -> None:
            if self.lost:
                raise LeaseLostError(f"not {action}")

        def is_lost(self) -> bool:
            return self.lost

    clock, stages, fence = Clock(), FakeStages(), LostDuringTraining()
    steps_run: list[int] = []

    def train() -> None:
        with progress.stage("training", "step", 20) as done:
            for step in range(20):
                fence.lost = step >= 3  # the heartbeat thread noticed it after step 3
                steps_run.append(step)
                done.advance()

    stages.on_train = train
    settings = WorkerSettings(rollout=RolloutMode.promote, progress_interval_s=0.0)
    runner, task_id = _runner(stages, settings, monotonic=clock, fence=fence)
    with pytest.raises(LeaseLostError, match="lease lost while task"):
        runner.run(runner.store.get(task_id))
    assert steps_run == [0, 1, 2, 3]


def test_each_online_test_poll_logs_searches_against_the_budget(caplog) -> None:  # type: ignore[no-untyped-def]
    wall, stages = Clock(), FakeStages()
    stages.verdict = "online"
    settings = WorkerSettings(rollout=RolloutMode.ab, ab_max_queries=1000, ab_max_s=3600.0)
    runner, task_id = _runner(stages, settings, clock=wall)
    caplog.set_level(logging.INFO, logger="tuner.worker.runner")
    waiting = runner.run(runner.store.get(task_id))  # experiment started, first poll: continue
    wall.now += 30.0
    runner.run(waiting)  # the policy promotes
    polls = [r.getMessage() for r in caplog.records if "stage=online_test" in r.getMessage()]
    assert polls == [  # at 0 s no rate yet: the deadline; at 30 s 991 searches left at 0.3/s
        f"task {task_id}: stage=online_test search=9/1000 eta=1h00m wins=3; continue: policy",
        f"task {task_id}: stage=online_test search=9/1000 searches/s=0.3 eta=55m03s wins=3; "
        "promote: policy",
    ]
