"""What a finished tuner task says about its round: the candidate's and the live model's
test-query figures, and the two stages of its decision (offline verdict, online tally)."""

from __future__ import annotations

from typing import Any

__all__ = ["OFFLINE_FIGURES", "decision", "deployment", "exact_scores"]


def exact_scores(task: dict[str, Any]) -> dict[str, dict[str, float] | None]:
    """The test-query figures the tuner recorded for the candidate and the live model it was
    gated against (`candidate_scoring_env`); None where it recorded none."""
    metrics = task.get("metrics") or {}
    return {
        "candidate_exact": _rounded(metrics.get("candidate_general")),
        "live_exact": _rounded(metrics.get("live_general")),
    }


def decision(task: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """The two stages of the task's decision: the gate's verdict with its estimate and bounds,
    and the online test's tally and outcome (None where the task did not get there)."""
    metrics = task.get("metrics") or {}
    gate = metrics.get("gate") or {}
    offline = None
    if metrics.get("verdict"):
        offline = {
            "verdict": metrics["verdict"],
            **{k: gate[k] for k in OFFLINE_FIGURES if k in gate},
        }
    online = dict(metrics["online"]) if metrics.get("online") else None
    if online is not None:
        online["reason"] = task.get("reason")
    return {"offline": offline, "online": online}


def deployment(task: dict[str, Any]) -> dict[str, Any] | None:
    """How the task's candidate would deploy: its side (full: reindexed; query: over the live
    index, no reindex), and with both sides trained each one's gain and the policy's choice."""
    metrics = task.get("metrics") or {}
    if not metrics.get("side"):
        return None
    found: dict[str, Any] = {"side": metrics["side"], "reindex": metrics["side"] != "query"}
    if metrics.get("choice"):
        found["choice"] = metrics["choice"]
    if metrics.get("candidates"):
        found["gains"] = {side: c.get("gain") for side, c in metrics["candidates"].items()}
    return found


OFFLINE_FIGURES = (
    "improvement_per_query",
    "improvement_lower_bound",
    "promote_bound",
    "confidence",
    "promote_confidence",
    "confirm_queries",
)


def _rounded(metrics: dict[str, float] | None) -> dict[str, float] | None:
    return None if not metrics else {k: round(float(v), 4) for k, v in metrics.items()}
