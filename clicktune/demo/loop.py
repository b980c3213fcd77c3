"""The closed loop, round by round, with the real processes.

    base model -> index the corpus -> [serve, ingest worker] -> per round: simulated shoppers
    search and click -> the ingest worker stores the UBI records -> the tuner worker
    (`clicktune tuner run --once`) sees the new sessions, queues a fine-tuning task and runs it:
    release a batch, train, gate, register, re-index behind the candidate alias, promote (alias
    swap) -> serve it -> measure the live system on the test queries with the true judgments.

Each demo run lives in its own namespace (topics, indexes, alias, model registry under the
report folder), so it never mixes with other data on the same cluster and can be repeated.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clicktune.clients import kafka_options, model_registry, opensearch_client
from clicktune.config import Settings, load_settings
from clicktune.demo.namespace import candidate_scoring_env, namespace_env, new_run_id
from clicktune.demo.processes import ChildProcess, ServeProcess
from clicktune.demo.task_figures import decision, deployment, exact_scores
from clicktune.demo.users import EventSink, simulate_round
from serving.encoders.encoder import ServableEncoder
from serving.encoders.model_loader import load_model_dir
from serving.index.indexer import index_corpus
from serving.index.vector_index import DocumentIndex
from tuner.config import RolloutMode, TrainMethod
from tuner.judged import JudgedCollection, load_collection
from tuner.offline_eval import evaluate_collection
from tuner.simulator import ClickSimulator, UserModel

log = logging.getLogger(__name__)
REFERENCES = ("base_exact", "supervised", "clicks", "no_ipw")  # what `references` can train
Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs on and how long."""

    dataset: Path
    rounds: int
    report_dir: Path
    users_per_query: int = 3
    max_steps: int | None = None
    randomize: float = 0.2
    explore_depth: int = 20
    references: bool = True
    score_candidates: bool = False  # each round's candidate on the test queries, rejected too
    user: UserModel = field(default_factory=lambda: UserModel(eta=1.0, noise=0.05))
    seed: int = 0
    rollout: RolloutMode = RolloutMode.two_stage  # or promote: straight after the gate
    online_passes: int = 3  # at most this many passes of the train queries for an online test
    method: TrainMethod = TrainMethod.full  # what the tuner trains (tuner.train.method)


@dataclass
class RoundResult:
    round: int
    model_version: str
    metrics: dict[str, float]
    status: str = "base"
    traffic: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # with score_candidates: the round's trained candidate and the model it was gated against,
    # each ranking the whole corpus for the test queries (exact search, as the references)
    candidate_exact: dict[str, float] | None = None
    live_exact: dict[str, float] | None = None
    # the two stages of the decision: the gate's verdict and bounds, and the online test's tally
    offline: dict[str, Any] | None = None
    online: dict[str, Any] | None = None
    # the candidate's side (full: reindexed; query: over the live index) and the policy's choice
    deploy: dict[str, Any] | None = None


class ClosedLoop:
    """One demo run: owns its child processes and measures each round."""

    def __init__(
        self,
        options: DemoOptions,
        config_path: Path | None,
        echo: Echo,
        run_id: str | None = None,
    ) -> None:
        """A new run, or with `run_id` the namespace of an earlier one (to re-measure its
        references from its stored sessions)."""
        self.options = options
        self.echo = echo
        self.collection: JudgedCollection = load_collection(options.dataset)
        self.run_id = run_id or new_run_id(self.collection.name)
        train_queries = len(self.collection.split_queries("train"))
        # the online test's traffic budget, a little under what the passes send, so that it
        # decides (or rolls back) by the last pass
        budget = int(0.9 * options.online_passes * options.users_per_query * train_queries)
        os.environ.update(
            namespace_env(
                self.run_id,
                options.report_dir / "home",
                options.randomize,
                options.explore_depth,
                options.rollout,
                max(1, budget),
                options.seed,
                options.method,
            )
        )
        if options.score_candidates:
            os.environ.update(candidate_scoring_env(self.collection))
        self.settings: Settings = load_settings(config_path)
        self.registry = model_registry(self.settings)
        self.client = opensearch_client(self.settings.opensearch)
        self.doc_index = DocumentIndex(self.client, self.settings.serving.index)
        self.logs = options.report_dir / "logs"
        self.sent = {"searches": 0, "events": 0}

    def run(self) -> list[RoundResult]:
        """Round 0 measures the base model; rounds 1..N each learn from a round of clicks."""
        self._import_base()
        results = [self._index_and_measure(0, "base", {})]
        ingest = ChildProcess(["ingest", "run"], self.logs / "ingest.log")
        try:
            serve = ServeProcess(self.logs / "serve-0.log")
            try:
                for number in range(1, self.options.rounds + 1):
                    result, serve = self._round(number, serve, ingest, results[-1])
                    results.append(result)
            finally:
                serve.stop()
        finally:
            ingest.stop()
        return results

    def references(self, names: Collection[str] = REFERENCES) -> dict[str, dict[str, float]]:
        """The reference models `names` (default all: base_exact, supervised, clicks, no_ipw),
        trained and scored in this process (exact search over the corpus): the yardsticks of the
        report. Run after `run`, on its sessions."""
        from tuner.references import (
            base_metrics,
            click_pairs,
            no_ipw_settings,
            supervised_pairs,
            train_reference,
        )
        from tuner.sessions import OpenSearchSessions

        unknown = sorted(set(names) - set(REFERENCES))
        if unknown:
            raise ValueError(f"unknown references {unknown}: the demo has {list(REFERENCES)}")
        tuner = self.settings.tuner
        if self.options.max_steps is not None:
            train = tuner.train.model_copy(update={"max_steps": self.options.max_steps})
            tuner = tuner.model_copy(update={"train": train})
        found: dict[str, dict[str, float]] = {}
        if "base_exact" in names:
            started = time.perf_counter()
            found["base_exact"] = base_metrics(self.collection, tuner)
            self.echo(
                f"reference base (exact search): {_fmt(found['base_exact'])} ({_since(started)} s)"
            )
        sessions: list = []
        if {"clicks", "no_ipw"} & set(names):
            sessions = OpenSearchSessions(self.client, self.settings.ingest).sessions(None, None)
        jobs = {
            "supervised": lambda: (supervised_pairs(self.collection), tuner),
            "clicks": lambda: (click_pairs(sessions, tuner), tuner),
            "no_ipw": lambda: (
                click_pairs(sessions, no_ipw_settings(tuner)),
                no_ipw_settings(tuner),
            ),
        }
        for name, job in jobs.items():
            if name not in names:
                continue
            pairs, settings = job()
            self.echo(f"reference {name}: training on {len(pairs)} pairs")
            ref = train_reference(self.collection, pairs, settings)
            found[name] = ref.metrics
            self.echo(
                f"reference {name}: {_fmt(ref.metrics)} ({ref.steps} steps, {ref.seconds:.0f} s)"
            )
        return found

    def _round(
        self, number: int, serve: ServeProcess, ingest: ChildProcess, previous: RoundResult
    ) -> tuple[RoundResult, ServeProcess]:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        traffic = self._traffic(number, serve.url)
        timings["traffic"] = _since(started)
        self._wait_for_ingest(ingest)
        timings["ingest"] = _since(started) - timings["traffic"]
        trained = self._train(number)
        timings["task"] = _since(started) - timings["traffic"] - timings["ingest"]
        if trained.get("stage") == "ab_running":
            online_started = time.perf_counter()
            trained = self._online(number, serve, ingest, trained, traffic)
            timings["online"] = _since(online_started)
        scored = {**exact_scores(trained), **decision(trained), "deploy": deployment(trained)}
        if trained.get("status") != "done":
            self.echo(
                f"round {number}: candidate {trained.get('status')} "
                f"({trained.get('reason', 'no reason given')}); "
                f"{previous.model_version} stays live"
            )
            result = RoundResult(
                number,
                previous.model_version,
                previous.metrics,
                status=str(trained.get("status")),
                traffic=traffic,
                seconds=timings,
                **scored,
            )
            return result, serve
        version = str(trained["version"])
        live = self.doc_index.live_index()
        how = "after the online test" if trained.get("metrics", {}).get("online") else "offline"
        self.echo(f"round {number}: the tuner worker promoted {version} {how} (index {live})")
        result = self._measure(number, version, traffic)
        result.status, result.seconds = "promoted", {**timings, **result.seconds}
        result.candidate_exact, result.live_exact = scored["candidate_exact"], scored["live_exact"]
        result.offline, result.online = scored["offline"], scored["online"]
        result.deploy = scored["deploy"]
        serve.stop()
        return result, ServeProcess(self.logs / f"serve-{number}.log")

    def _online(
        self,
        number: int,
        serve: ServeProcess,
        ingest: ChildProcess,
        task: dict[str, Any],
        traffic: dict[str, int],
    ) -> dict[str, Any]:
        """The online stage: the shoppers search on (every search now an interleaving of the
        live model and the candidate) and the tuner worker polls the sequential test after each
        pass, until it promotes or rolls back (at the latest at its traffic budget)."""
        for attempt in range(1, self.options.online_passes + 1):
            self.echo(f"round {number}: online test, pass {attempt}: {task.get('reason', '')}")
            sent = self._traffic(number, serve.url, online_pass=attempt)
            for key, value in sent.items():
                traffic[f"online_{key}"] = traffic.get(f"online_{key}", 0) + value
            self._wait_for_ingest(ingest)
            task = self._train(number, suffix=f"-online-{attempt}")
            online = task.get("metrics", {}).get("online", {})
            self.echo(
                f"round {number}: online test after pass {attempt}: {online.get('wins', 0)} wins, "
                f"{online.get('losses', 0)} losses, {online.get('ties', 0)} ties: "
                f"{online.get('decision', task.get('status'))}"
            )
            if task.get("stage") != "ab_running":
                return task
        return task

    def _import_base(self) -> None:
        from tuner.publish import import_model

        started = time.perf_counter()
        result = import_model(self.registry, self.settings.tuner.train.base_model)
        verb = "imported" if result.created else "found"
        self.echo(
            f"{verb} base model {self.settings.tuner.train.base_model} ({_since(started):.1f} s)"
        )

    def _index_and_measure(self, number: int, version: str, traffic: dict) -> RoundResult:
        """Index the corpus with `version` behind the run's alias, then score the live system."""
        encoder = self._encoder(version)
        started = time.perf_counter()
        report = index_corpus(
            self.collection.corpus(),
            encoder,
            self.doc_index,
            batch_size=self.settings.serving.encoder.batch_size,
        )
        indexed = _since(started)
        self.echo(
            f"round {number}: indexed {report.docs} docs with {version} into "
            f"{report.index} ({indexed:.1f} s)"
        )
        result = self._measure(number, version, traffic)
        result.seconds["index"] = indexed
        return result

    def _encoder(self, version: str) -> ServableEncoder:
        return load_model_dir(self.registry.get(version).path, self.settings.serving.encoder)

    def _measure(self, number: int, version: str, traffic: dict) -> RoundResult:
        """Score the live system (the run's alias, searched with `version`) on the test queries."""
        encoder = self._encoder(version)
        evaluation = evaluate_collection(
            self.collection, encoder, self.doc_index, "test", progress=False
        )
        metrics = {k: round(v, 4) for k, v in evaluation.metrics.items()}
        self.echo(
            f"round {number}: live model {version}: "
            + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        )
        return RoundResult(
            number,
            version,
            metrics,
            traffic=traffic,
            seconds={"measure": evaluation.seconds},
        )

    def _traffic(self, number: int, url: str, online_pass: int = 0) -> dict[str, int]:
        from kafka import KafkaProducer

        seed = self.options.seed + number + 1000 * online_pass  # each pass its own shoppers
        simulator = ClickSimulator(self.collection.qrels, self.options.user, seed=seed)
        producer = KafkaProducer(**kafka_options(self.settings.kafka), acks="all", linger_ms=20)
        try:
            report = simulate_round(
                url,
                self.collection,
                simulator,
                EventSink(producer, self.settings.ingest.events_topic),
                round_number=number + 1000 * online_pass,
                users_per_query=self.options.users_per_query,
                seed=self.options.seed,
            )
        finally:
            producer.close(timeout=30)
        self.sent["searches"] += report.searches
        self.sent["events"] += report.events
        self.echo(
            f"round {number}: {report.searches} searches, {report.clicks} clicks, "
            f"{report.events} events sent"
        )
        return {"searches": report.searches, "events": report.events, "clicks": report.clicks}

    def _wait_for_ingest(self, ingest: ChildProcess, timeout_s: float = 600) -> None:
        """Until the UBI indexes hold every record sent so far (or the worker died)."""
        ingest_settings = self.settings.ingest
        targets = {
            ingest_settings.queries_index: self.sent["searches"],
            ingest_settings.events_index: self.sent["events"],
        }
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not ingest.alive():
                raise RuntimeError(f"the ingest worker exited:\n{ingest.log_tail()}")
            if all(_count(self.client, index) >= want for index, want in targets.items()):
                return
            time.sleep(1)
        raise RuntimeError(f"ingest did not catch up in {timeout_s:.0f} s: want {targets}")

    def _train(self, number: int, suffix: str = "") -> dict[str, Any]:
        """One pass of the tuner worker: its trigger sees the round's sessions, queues a task
        and runs it to the end or to its online test, or polls the online test of a task
        waiting in it (`clicktune tuner run --once --json`); the task's record."""
        args = [sys.executable, "-m", "clicktune", "tuner", "run", "--once", "--json"]
        env = dict(os.environ)
        if self.options.max_steps is not None:
            env["CLICKTUNE_TUNER__TRAIN__MAX_STEPS"] = str(self.options.max_steps)
        log_path = self.logs / f"tuner-{number}{suffix}.log"
        self.echo(f"round {number}: tuner worker (log: {log_path})")
        with log_path.open("w") as stderr:
            done = subprocess.run(args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        if done.returncode != 0:
            tail = log_path.read_text().splitlines()[-15:]
            raise RuntimeError(
                f"clicktune tuner run --once {_exit_reason(done.returncode)} (log: {log_path}):\n"
                + "\n".join(tail)
            )
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        tasks = answer.get("tasks") or []
        if not tasks:
            trigger = answer.get("trigger", {}).get("reason", "no trigger decision")
            return {"status": "skipped", "reason": f"no task ran: {trigger}"}
        task = dict(tasks[-1])
        if task.get("status") == "rejected" and not task.get("reason"):
            task["reason"] = "the gate rejected the candidate"
        return task


def _exit_reason(returncode: int) -> str:
    """How a child ended, in words: a negative code is the signal that killed it."""
    if returncode >= 0:
        return f"failed with exit code {returncode}"
    name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else "?"
    hint = " (the kernel's out-of-memory killer sends it: see dmesg)" if name == "SIGKILL" else ""
    return f"was killed by signal {-returncode} {name}{hint}"


def _count(client, index: str) -> int:  # type: ignore[no-untyped-def]
    if not client.indices.exists(index=index):
        return 0
    client.indices.refresh(index=index)
    return int(client.count(index=index)["count"])


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 1)
