"""The work behind each task stage, on the real registry, indexes and experiment store.

Every method is safe to run again after a worker died in it: a batch released by the dead worker
is adopted, a reindex resumes from its checkpoint (the candidate alias only ever moves onto a
complete index), an experiment already started for the version is kept, and a promotion that
already happened is found done. The runner (`runner.py`) decides when each one runs.

`fence` is the worker's lease tenure: the side effects deep inside a stage (a registration at the
end of training, the candidate alias move) check it right before they happen. A version
registered by a task records the task's id in its metadata (`metrics.task_id`), so a resumed
training adopts only its own candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from opensearchpy import OpenSearch

from serving.config import ABSettings
from serving.errors import ExperimentError
from serving.index.index_versions import alias_holders, index_version, move_aliases
from serving.index.reindex import Reindexer, abandon
from serving.index.reindex_checkpoints import CheckpointStores, checkpoint_store
from serving.index.vector_index import DocumentIndex
from serving.models.registries import ModelRegistry
from serving.models.registry import ModelVersion
from serving.rollout.ab import CANDIDATE, CONTROL, Arm, Experiments, new_experiment
from serving.rollout.ab_stats import ExperimentMetrics, decide, guard, metrics_of
from serving.rollout.arm_health import ArmHealthStore
from serving.rollout.rollout import Publish, Rollout, paired_index
from tuner import progress
from tuner.batches import release_batch, reload_batch
from tuner.config import TunerSettings
from tuner.errors import BatchConflictError
from tuner.iteration import IterationContext, Notify, run_training_iteration
from tuner.worker.lock import NO_FENCE, Fence

__all__ = ["LoopStages", "OnlineCheck", "Reindexers", "TrainOutcome", "online_tally"]

log = logging.getLogger(__name__)


class Reindexers(Protocol):
    """A `Reindexer` of registry model `version` onto `alias` on the configured engine (local or
    a Ray cluster, joined while the context is open), reporting (written, total) to
    `on_progress`."""

    def __call__(
        self, version: str, *, alias: str, on_progress: Callable[[int, int], None]
    ) -> AbstractContextManager[Reindexer]: ...


@dataclass(frozen=True)
class _Built:
    """What `Rollout` reads of a reindex: the index it built."""

    index: str


class OnlineCheck(NamedTuple):
    """One poll of the online test: continue, promote or rollback, why, and its tally."""

    action: str
    reason: str
    tally: dict[str, int] = {}


def online_tally(metrics: ExperimentMetrics) -> dict[str, int]:
    """The experiment's traffic so far: interleaved searches won, lost and tied by the
    candidate, and the searches each arm of a split test served."""
    interleave = metrics.interleave
    split = {f"{name}_searches": arm.queries for name, arm in metrics.arms.items()}
    interleaved = interleave.wins + interleave.losses + interleave.ties
    return {
        "wins": interleave.wins,
        "losses": interleave.losses,
        "ties": interleave.ties,
        "searches": interleaved + sum(split.values()),
        **split,
    }


@dataclass(frozen=True)
class TrainOutcome:
    """What training did: `done` with a registered candidate `version`, or `rejected`."""

    status: str
    version: str | None
    reason: str
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoopStages:
    """The real stage work; built by the worker's composition root (`clicktune tuner run`)."""

    context: IterationContext
    settings: TunerSettings
    registry: ModelRegistry
    doc_index: DocumentIndex
    checkpoints: Path | CheckpointStores  # a folder (`<home>/reindex`) or OpenSearch documents
    reindexers: Reindexers  # the engine of `serving.reindex.engine` (`clicktune reindex`'s)
    experiments: Experiments
    ab_settings: ABSettings
    client: OpenSearch
    ubi_indexes: tuple[str, str]  # (queries index, events index) the A/B metrics read
    publish: Publish | None = None
    arm_health: ArmHealthStore | None = None  # the replicas' per-arm counts, for the guards
    clock: Callable[[], float] = time.time
    fence: Fence = NO_FENCE  # the lease tenure of the runner these stages work for

    def fenced(self, fence: Fence) -> LoopStages:
        """These stages for a runner holding `fence`."""
        return replace(self, fence=fence)

    # -- releasing / training ---------------------------------------------------------------
    def batch_count(self) -> int:
        return len(self.context.store.list())

    def release(self, batches_before: int) -> str:
        """Release the current batch, or adopt the one a dead worker released after
        `batches_before`."""
        adopted = self._released_after(batches_before)
        if adopted is not None:
            return adopted
        grace = timedelta(seconds=self.settings.batches.grace_s)
        self.fence.check("releasing a batch")
        try:
            batch = release_batch(self.context.store, self.context.source, datetime.now(UTC), grace)
        except BatchConflictError:
            # another process froze it between our list and our save (`clicktune train`)
            adopted = self._released_after(batches_before)
            if adopted is None:
                raise
            return adopted
        return batch.batch.batch_id

    def _released_after(self, batches_before: int) -> str | None:
        released = self.context.store.list()
        return released[batches_before].batch_id if len(released) > batches_before else None

    def versions(self, task_id: str | None = None) -> list[str]:
        """Registered versions, oldest first; with `task_id`, only those registered for it."""
        found = self.registry.list()
        if task_id is not None:
            found = [v for v in found if v.metrics.get("task_id") == task_id]
        return [v.version for v in found]

    def train(self, batch_id: str, notify: Notify, task_id: str | None = None) -> TrainOutcome:
        """One training iteration on `batch_id` (gate, ONNX export, registration as candidate,
        its metadata naming `task_id`)."""
        registry = _FencedRegistry(self.context.registry, self.fence)
        context = replace(self.context, registry=registry, task_id=task_id)
        released = reload_batch(self.context.store, self.context.source, batch_id)
        result = run_training_iteration(
            released, context, self.settings, notify=notify, progress=False
        )
        decision = result.decision
        metrics: dict[str, Any] = {
            "candidate": decision.candidate,
            "live": decision.live,
            "sessions": result.sessions,
            "pairs": result.pairs,
            "steps": result.train.steps,
            "gate": decision.checks,  # confidence, confirm / select queries and sessions, bound
            "verdict": decision.verdict.value,  # promote | online | reject | undecided
        }
        if decision.general_candidate is not None:  # the general set, rejected candidates too
            metrics["candidate_general"] = decision.general_candidate
            metrics["live_general"] = decision.general_live
        metrics["side"] = result.side  # full | query: what a registered candidate is
        if len(result.candidates) > 1:  # tuner.candidate_policy: both sides, the choice, why
            metrics["candidates"] = {c.side: c.as_dict() for c in result.candidates}
        if result.choice is not None:
            metrics["choice"] = result.choice.as_dict()
        version = result.version.version if result.version is not None else None
        return TrainOutcome(result.status, version, decision.reason, metrics)

    def adopt(self, version: str) -> None:
        """Finish the registration a dead worker started: the version is whole (registry adds
        are atomic and happen after the parity check); point `candidate` at it."""
        self.fence.check(f"adopting {version}")
        self.registry.set_alias("candidate", version)

    # -- reindexing -------------------------------------------------------------------------
    def needs_reindex(self, version: str) -> bool:
        """Whether `version` serves only over an index of its own: a query model ("query
        model X over document model Y") searches the live index's vectors and needs none."""
        return self.registry.get(version).document_model is None

    def reindex(self, version: str) -> str:
        """Build (or finish) `version`'s index behind the candidate alias; return its name."""
        alias = self.doc_index.settings.candidate_alias
        docs = progress.stage("reindexing", "doc")  # starts at the copy's first report
        with self.reindexers(version, alias=alias, on_progress=docs.update) as reindexer:
            pending = reindexer.pending()
            if pending is not None and pending.model_version != version:
                self.fence.check(f"abandoning the reindex for {pending.model_version}")
                dropped = abandon(self.doc_index, self.checkpoints, alias)
                log.warning(
                    "abandoned an interrupted reindex for another model: deleted %s", dropped
                )
            self.fence.check(f"reindexing for {version}")
            index = reindexer.run(resume=True).index
        docs.finish()
        return index

    # -- A/B --------------------------------------------------------------------------------
    def start_ab(self, version: str, traffic: float, mode: str) -> str:
        """Start the experiment production vs `version` (or keep the one already running)."""
        running = self.experiments.load()
        if running is not None and running.candidate.model_version == version:
            return running.id
        if running is not None:
            raise ExperimentError(
                f"experiment {running.id} (candidate {running.candidate.model_version}) is "
                f"already running; stop it before testing {version}"
            )
        index = self.doc_index.settings
        control = self.registry.get("production").version
        # A query model's arm searches the live index (its document model's vectors) with its
        # own query vectors: both arms over one index, no candidate index to build. Over an
        # index another model built its arm would search vectors it was never trained against:
        # `paired_index` refuses with the pairing named, and the task fails before any traffic.
        candidate = self.registry.get(version)
        searched = index.candidate_alias
        if candidate.document_model is not None:
            paired_index(self.doc_index, candidate)
            searched = index.alias
        self.fence.check(f"starting the experiment for {version}")
        experiment = new_experiment(
            Arm(CONTROL, control, index.alias),
            Arm(CANDIDATE, version, searched),
            traffic,
            mode,  # type: ignore[arg-type]
        )
        self.experiments.save(experiment)
        return experiment.id

    def ab_decision(
        self, started_at: float, max_s: float, max_queries: int | None = None
    ) -> OnlineCheck:
        """The A/B policy's action (continue, promote, rollback), its reason and the tally so far.

        The guards look at the replicas' arm health first and need no UBI data, so a candidate
        that errs or is slow is stopped at the first poll after a replica reported it. An
        experiment still undecided after `max_s` seconds or `max_queries` of its searches is
        rolled back: the live model stays."""
        experiment = self.experiments.load()
        if experiment is None:
            return OnlineCheck("rollback", "the experiment is gone (stopped by hand)")
        try:
            health = self.arm_health.read(experiment.id) if self.arm_health is not None else {}
        except ExperimentError as exc:
            # e.g. 503 while the shard of a health index created a moment ago starts: no
            # decision without the guards, and no failed task for a hiccup; the next poll retries
            if self._ab_overdue(started_at, max_s):
                return OnlineCheck("rollback", f"no decision after {max_s:.0f} s (ab_max_s): {exc}")
            log.warning("A/B guards not checked this poll: %s", exc)
            return OnlineCheck("continue", f"arm health unreadable, guards retry next poll: {exc}")
        broken = guard(health, self.ab_settings)
        if broken is not None:
            return OnlineCheck("rollback", f"guard: {broken}")
        metrics = metrics_of(self.client, experiment, *self.ubi_indexes)
        metrics.health = health
        decision = decide(experiment, metrics, self.ab_settings)
        tally = online_tally(metrics)
        if decision.action == "continue":
            if self._ab_overdue(started_at, max_s):
                why = f"no decision after {max_s:.0f} s (ab_max_s): {decision.reason}"
                return OnlineCheck("rollback", why, tally)
            if max_queries is not None and tally["searches"] >= max_queries:
                why = (
                    f"no decision after {tally['searches']} searches (ab_max_queries="
                    f"{max_queries}): {decision.reason}; the live model stays"
                )
                return OnlineCheck("rollback", why, tally)
        return OnlineCheck(decision.action, decision.reason, tally)

    def _ab_overdue(self, started_at: float, max_s: float) -> bool:
        return self.clock() - started_at > max_s

    # -- promoting / cleaning up ------------------------------------------------------------
    def promote(self, version: str) -> dict[str, Any]:
        """Production alias and document alias onto `version` and its index, replicas told."""
        self.fence.check(f"promoting {version}")
        self._stop_experiment(version)
        rollout = Rollout(
            self.registry, self.doc_index, lambda v: _Built(self.reindex(v)), self.publish
        )
        result = rollout.promote(version)
        self._drop_candidate_alias()
        self.context.tracker.set_alias("production", version)
        return result.as_dict()

    def clean_up(
        self, version: str | None, *, drop_version: bool = False, keep_checkpoint: bool = False
    ) -> list[str]:
        """Undo what a stopped task left: its experiment, a partial reindex (unless
        `keep_checkpoint`: a transient failure, the next run resumes it), the candidate alias.
        The registered version and its complete index stay, like any kept version, unless
        `drop_version` (a canceled task): then the version is archived and its idle indexes
        deleted."""
        self.fence.check(f"cleaning up after {version}")
        done: list[str] = []
        if self._stop_experiment(version):
            done.append("experiment stopped")
        alias = self.doc_index.settings.candidate_alias
        checkpoint = checkpoint_store(self.checkpoints, alias).load()
        if checkpoint is not None and keep_checkpoint:
            done.append(f"reindex checkpoint of {checkpoint.target} kept to resume")
        elif checkpoint is not None:
            done.append(f"partial index {abandon(self.doc_index, self.checkpoints, alias)} deleted")
        if self._drop_candidate_alias():
            done.append(f"alias {alias} removed")
        if drop_version and version is not None:
            done += self._drop_version(version)
        return done

    def _drop_version(self, version: str) -> list[str]:
        """Archive `version` and delete its indexes that no alias holds; the indexes also when
        the version is archived already (a worker died between the two)."""
        done: list[str] = []
        if version in self.versions():
            self.registry.archive(version)
            done.append(f"version {version} archived")
        client, prefix = self.doc_index.client, self.doc_index.settings.prefix
        found = client.indices.get(index=f"{prefix}__{version}__*", params={"ignore": 404})
        for name, body in found.items():
            if index_version(self.doc_index, name) == version and not body.get("aliases"):
                self.doc_index.delete(name)
                done.append(f"index {name} deleted")
        return done

    def _stop_experiment(self, version: str | None) -> bool:
        running = self.experiments.load()
        if running is None or running.candidate.model_version != version:
            return False
        self.experiments.stop()
        return True

    def _drop_candidate_alias(self) -> bool:
        alias = self.doc_index.settings.candidate_alias
        held = alias_holders(self.doc_index, alias)
        if held:
            move_aliases(self.doc_index, [{"remove": {"index": i, "alias": alias}} for i in held])
        return bool(held)


class _FencedRegistry:
    """The registry as training writes it: every registration and alias move checks the fence
    first, so a worker that lost its lease registers nothing."""

    def __init__(self, registry: Any, fence: Fence) -> None:
        self._registry, self._fence = registry, fence

    def add(self, src_dir: Any, version: str | None = None) -> ModelVersion:
        self._fence.check("registering a candidate")
        return self._registry.add(src_dir, version)  # type: ignore[no-any-return]

    def set_alias(self, alias: str, version: str) -> None:
        self._fence.check(f"pointing {alias!r} at {version}")
        self._registry.set_alias(alias, version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._registry, name)  # reads: get, list, aliases
