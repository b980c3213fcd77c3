"""The dashboard's real providers: small functions over the registry, the experiment store, the
UBI indexes and the demo reports, each returning the plain dict one panel draws.

Model states, in the order they win (one table, `STATES`): `production` (the alias this
replica follows points at it), `in experiment` (the running A/B test's candidate arm),
`candidate` (the `candidate` alias), `retired` (production once, not now), `registered`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from serving.config import ABSettings
from serving.errors import ExperimentError
from serving.models.registries import ModelRegistry
from serving.models.registry import ModelVersion
from serving.rollout.ab import CANDIDATE, CONTROL, ArmHealth, Experiment, Experiments
from serving.rollout.ab_stats import ExperimentMetrics, decide
from serving.rollout.arm_health import ArmHealthStore

__all__ = [
    "STATES",
    "TaskLister",
    "ab_source",
    "HealthReading",
    "latest_report",
    "models_source",
    "replica_health",
    "tasks_source",
    "training_source",
    "uplift_source",
]

STATES = ("production", "in experiment", "candidate", "retired", "registered")
REPORT_METRICS = ("ndcg@10", "mrr@10", "recall@100")
VALIDATION_PREFIX = "val_"
RUNS_SHOWN = 10
ALL_REPLICAS, THIS_REPLICA = "all replicas", "this replica"

log = logging.getLogger(__name__)

# per-arm counts of an experiment, and whose they are (ALL_REPLICAS or THIS_REPLICA)
HealthReading = tuple[Mapping[str, ArmHealth], str]


def models_source(
    registry: ModelRegistry,
    alias: str,
    serving_version: Callable[[], str | None],
    experiment: Callable[[], Experiment | None],
) -> Callable[[], dict[str, Any]]:
    """Versions newest first with their state, aliases, lineage and numeric metrics."""

    def read() -> dict[str, Any]:
        running = experiment()
        history = registry.alias_history(alias)
        here = serving_version()
        versions = [
            {
                "version": v.version,
                "state": state_of(v, alias, history, running),
                "aliases": list(v.aliases),
                "serving_here": v.version == here,
                "created_at": v.created_at,
                "parent": v.parent,
                "kind": v.kind,
                "dimension": v.dimension,
                "metrics": _numbers(v.metrics),
            }
            for v in reversed(registry.list())
        ]
        return {"alias": alias, "serving": here, "history": history, "versions": versions}

    return read


def state_of(
    version: ModelVersion, alias: str, history: list[str], running: Experiment | None
) -> str:
    """The first state of `STATES` that holds for `version`."""
    holds = {
        "production": alias in version.aliases,
        "in experiment": running is not None and running.candidate.model_version == version.version,
        "candidate": "candidate" in version.aliases,
        "retired": version.version in history,
        "registered": True,
    }
    return next(state for state in STATES if holds[state])


def replica_health(
    store: ArmHealthStore, local: Callable[[], Mapping[str, ArmHealth]]
) -> Callable[[Experiment], HealthReading]:
    """Every replica's per-arm counts summed, as the tuner worker's guards read them; this
    replica's own (`local`) until a first report has landed or while the store can't be read."""

    def read(experiment: Experiment) -> HealthReading:
        try:
            summed = store.read(experiment.id)
        except ExperimentError as exc:
            log.warning("arm health of all replicas unreadable (%s): showing this one's", exc)
            summed = {}
        return (summed, ALL_REPLICAS) if summed else (dict(local()), THIS_REPLICA)

    return read


def _no_health(experiment: Experiment) -> HealthReading:
    return {}, THIS_REPLICA


def ab_source(
    store: Experiments,
    metrics_for: Callable[[Experiment], ExperimentMetrics],
    settings: ABSettings,
    health: Callable[[Experiment], HealthReading] = _no_health,
) -> Callable[[], dict[str, Any]]:
    """The running experiment (else the last stopped one): arms, rates with 95 % intervals, the
    sequential test's decision; `health` reads the per-arm requests, errors and latency
    (`replica_health`)."""

    def read() -> dict[str, Any]:
        experiment, stopped_at = store.load(), None
        if experiment is None:
            experiment, stopped_at = store.last_stopped()
        if experiment is None:
            return {"experiment": None}
        metrics = metrics_for(experiment)
        arm_health, health_scope = health(experiment) if stopped_at is None else ({}, ALL_REPLICAS)
        metrics.health = dict(arm_health)
        decision = decide(experiment, metrics, settings)
        measured = metrics.as_dict()
        arms = [
            {**vars(experiment.arm(name)), **measured["arms"][name]}
            for name in (CONTROL, CANDIDATE)
        ]
        info = {
            **{k: v for k, v in experiment.as_dict().items() if k not in (CONTROL, CANDIDATE)},
            "status": "running" if stopped_at is None else "stopped",
            "stopped_at": stopped_at,
        }
        info.pop("salt")  # the salt would let anyone work out every client's arm
        return {
            "experiment": info,
            "arms": arms,
            "interleave": measured["interleave"],
            "health": measured["health"],
            "health_scope": health_scope,
            "decision": vars(decision),
            "alpha": settings.alpha,
        }

    return read


def latest_report(folder: Path) -> Path | None:
    """The newest `report.json` in `folder` or one level below (a demo run's --report)."""
    candidates = [*folder.glob("report.json"), *folder.glob("*/report.json")]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def uplift_source(reports_dir: Path, registry: ModelRegistry) -> Callable[[], dict[str, Any]]:
    """Metrics over rounds from the newest demo report; without one, each registered version's
    validation metrics (what the tuner measured when it trained it)."""

    def read() -> dict[str, Any]:
        path = latest_report(Path(reports_dir))
        if path is not None:
            return _from_report(path)
        return _from_registry(registry.list(), reports_dir)

    return read


def _from_report(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    rounds = report.get("rounds") or []
    series = [
        {"name": m, "values": [(r.get("metrics") or {}).get(m) for r in rounds]}
        for m in REPORT_METRICS
    ]
    candidates = [(r.get("candidate_exact") or {}).get("ndcg@10") for r in rounds]
    if any(v is not None for v in candidates):  # demo --score-candidates: rejected ones too
        series.append({"name": "candidate ndcg@10 (exact)", "values": candidates})
    references = [
        {"name": f"{name} ndcg@10", "value": report[name]["ndcg@10"]}
        for name in ("supervised", "clicks", "no_ipw")
        if report.get(name)
    ]
    base = (report.get("base") or {}).get("ndcg@10")
    last = rounds[-1]["metrics"]["ndcg@10"] if rounds else None
    uplift = round(100 * (last - base) / base, 2) if base and last is not None else None
    return {
        "source": f"demo report {path}",
        "title": f"closed loop on {report.get('dataset', '?')}",
        "labels": [f"round {r.get('round')} ({r.get('model_version')})" for r in rounds],
        "series": series,
        "references": references,
        "uplift_ndcg@10_pct": uplift,
        "decisions": [_decision_row(r) for r in rounds[1:]],
    }


def _decision_row(round_: dict[str, Any]) -> dict[str, Any]:
    """One round's decision in words: the gate's verdict, estimate and bound; the online test's
    wins / losses / ties and searches; the outcome; and (demo --score-candidates) the
    candidate's true nDCG@10 delta on the test queries."""
    offline, online = round_.get("offline") or {}, round_.get("online") or {}
    estimate, bound = offline.get("improvement_per_query"), offline.get("improvement_lower_bound")
    offline_text = offline.get("verdict", "-")
    if estimate is not None and bound is not None:
        offline_text += f" {estimate:+.4f} (LB {bound:+.4f})"
    online_text = "-"
    if online:
        online_text = (
            f"{online.get('wins', 0)}/{online.get('losses', 0)}/{online.get('ties', 0)} in "
            f"{online.get('searches', 0)} searches: {online.get('decision', '?')}"
        )
    candidate = (round_.get("candidate_exact") or {}).get("ndcg@10")
    live = (round_.get("live_exact") or {}).get("ndcg@10")
    delta = round(candidate - live, 4) if candidate is not None and live is not None else None
    return {
        "round": round_.get("round"),
        "offline": offline_text,
        "online": online_text,
        "outcome": round_.get("status"),
        "true_delta": delta,
    }


def _from_registry(versions: Iterable[ModelVersion], reports_dir: Path) -> dict[str, Any]:
    trained = [v for v in versions if any(k.startswith(VALIDATION_PREFIX) for k in v.metrics)]
    names = sorted({k for v in trained for k in v.metrics if k.startswith(VALIDATION_PREFIX)})
    return {
        "source": f"registry validation metrics (no report.json under {reports_dir})",
        "title": "validation metrics per trained version",
        "labels": [v.version for v in trained],
        "series": [{"name": n, "values": [v.metrics.get(n) for v in trained]} for n in names],
        "references": [],
        "uplift_ndcg@10_pct": None,
    }


def training_source(registry: ModelRegistry, shown: int = RUNS_SHOWN) -> Callable[[], dict]:
    """The registry's lineage: trained versions newest first, parent, sessions, pairs, losses."""

    def read() -> dict[str, Any]:
        trained = [v for v in reversed(registry.list()) if v.parent or v.metrics]
        return {
            "runs": [
                {
                    "version": v.version,
                    "parent": v.parent,
                    "created_at": v.created_at,
                    "metrics": _numbers(v.metrics),
                }
                for v in trained[:shown]
            ]
        }

    return read


class TaskLister(Protocol):
    """What the dashboard needs of the fine-tuning task store."""

    def list(self, status: Any = None, limit: int = 20, offset: int = 0) -> Iterable[Any]: ...


def tasks_source(store: TaskLister, limit: int = 20) -> Callable[[], dict[str, Any]]:
    """The newest fine-tuning tasks as the store's records render them (`as_dict()`)."""

    def read() -> dict[str, Any]:
        return {"tasks": [task.as_dict() for task in store.list(status=None, limit=limit)]}

    return read


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
