"""A stand-in for the worker's stage work (`tuner.worker.stages.LoopStages`) that records what
the runner asked of it."""

from __future__ import annotations

from typing import Any

from tuner.worker.stages import OnlineCheck, TrainOutcome


class FakeStages:
    """Records the work asked of it; `fail_in` makes one stage raise."""

    def __init__(self, outcome: str = "done", fail_in: str | None = None) -> None:
        self.calls: list[str] = []
        self.registered: list[tuple[str, str | None]] = [("base", None)]  # (version, task id)
        self.outcome, self.fail_in = outcome, fail_in
        self.decisions = ["continue", "promote"]
        self.verdict = "promote"  # the offline stage's verdict on a registered candidate
        self.modes: list[str] = []
        self.on_train: Any = None
        self.cleanups: list[dict[str, bool]] = []
        self.side = "full"  # "query": the registered candidate is a query model (no reindex)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.fail_in:
            raise RuntimeError(f"{name} broke")

    def batch_count(self) -> int:
        return 0

    def release(self, batches_before: int) -> str:
        self._call("release")
        return "batch-0001"

    def versions(self, task_id: str | None = None) -> list[str]:
        return [v for v, owner in self.registered if task_id is None or owner == task_id]

    def train(self, batch_id: str, notify: Any, task_id: str | None = None) -> TrainOutcome:
        self._call("train")
        if self.on_train:
            self.on_train()
        notify("trained")
        if self.outcome != "done":
            return TrainOutcome("rejected", None, "gate: no better", {"candidate": {}})
        self.registered.append(("v1", task_id))
        metrics = {"pairs": 3, "verdict": self.verdict, "side": self.side}
        return TrainOutcome("done", "v1", "gate passed", metrics)

    def adopt(self, version: str) -> None:
        self._call(f"adopt {version}")

    def needs_reindex(self, version: str) -> bool:
        return self.side != "query"

    def reindex(self, version: str) -> str:
        self._call("reindex")
        return f"docs__{version}__1"

    def start_ab(self, version: str, traffic: float, mode: str) -> str:
        self._call("start_ab")
        self.modes.append(mode)
        return "exp1"

    def ab_decision(
        self, started_at: float, max_s: float, max_queries: int | None = None
    ) -> OnlineCheck:
        self._call("ab_decision")
        return OnlineCheck(self.decisions.pop(0), "policy", {"wins": 3, "searches": 9})

    def promote(self, version: str) -> dict[str, Any]:
        self._call("promote")
        return {"version": version}

    def clean_up(
        self, version: str | None, *, drop_version: bool = False, keep_checkpoint: bool = False
    ) -> list[str]:
        self.calls.append("clean_up")
        self.cleanups.append({"drop_version": drop_version, "keep_checkpoint": keep_checkpoint})
        if drop_version:
            self.registered = [(v, t) for v, t in self.registered if v != version]
            return ["alias removed", f"version {version} archived"]
        return ["alias removed"]
