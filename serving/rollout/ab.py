"""A/B experiments: arms, sticky assignment, and routing `/v1/search` to the caller's arm.

The experiment lives in `<registry root>/experiment.json` (the folder every replica already
reads for model aliases), replaced atomically; a stopped one is archived under `experiments/`.
With `serving.state.backend: opensearch` it is an OpenSearch document instead
(serving/rollout/experiment_store.py); both are `Experiments`.
Each arm is a (model version, index alias) pair. A client goes to the candidate when
`sha256(salt:client_id)` read as a fraction of 2**64 is below `traffic`: the same answer on every
replica and after restarts, and a new salt per experiment reshuffles who is in which arm.
In `interleave` mode every caller sees a team-draft merge of both arms (see `interleave`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from serving.encoders.encoder import Encoder
from serving.errors import ExperimentError
from serving.index.vector_index import Hit, SearchIndex
from serving.rollout.arm_health import ArmHealth, HealthLedger
from serving.rollout.interleave import team_draft

__all__ = [
    "Arm",
    "ArmHealth",
    "ArmRouter",
    "Experiment",
    "ExperimentStore",
    "Experiments",
    "RoutedSearch",
    "assign",
    "new_experiment",
]

CONTROL, CANDIDATE = "control", "candidate"
Mode = Literal["split", "interleave"]


@dataclass(frozen=True)
class Arm:
    """One arm: its name, the model version it embeds with, the index alias it searches."""

    name: str
    model_version: str
    index_alias: str


@dataclass(frozen=True)
class Experiment:
    """A running experiment: control vs candidate, the candidate's share, the hashing salt."""

    id: str
    salt: str
    mode: Mode
    traffic: float
    control: Arm
    candidate: Arm
    started_at: str

    def arm(self, name: str) -> Arm:
        if name not in (CONTROL, CANDIDATE):
            raise ExperimentError(f"unknown arm {name!r}: use {CONTROL!r} or {CANDIDATE!r}")
        return self.control if name == CONTROL else self.candidate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Experiment:
        arms = {k: Arm(**data[k]) for k in (CONTROL, CANDIDATE)}
        return cls(**{**data, **arms})


def new_experiment(control: Arm, candidate: Arm, traffic: float, mode: Mode) -> Experiment:
    """A fresh experiment with a random id and salt."""
    if not 0.0 < traffic < 1.0:
        raise ExperimentError(f"traffic={traffic} must be strictly between 0 and 1")
    if mode not in ("split", "interleave"):
        raise ExperimentError(f"mode={mode!r} is not known: use 'split' or 'interleave'")
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Experiment(
        uuid.uuid4().hex[:12], uuid.uuid4().hex, mode, traffic, control, candidate, now
    )


def assign(experiment: Experiment, client_id: str | None) -> Arm:
    """The caller's arm: sticky by a hash of (salt, client id); no client id -> control."""
    if not client_id:
        return experiment.control
    digest = hashlib.sha256(f"{experiment.salt}:{client_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return experiment.candidate if fraction < experiment.traffic else experiment.control


class Experiments(Protocol):
    """Where the running experiment is kept: read it, start one, stop it."""

    def load(self) -> Experiment | None: ...

    def save(self, experiment: Experiment) -> None: ...

    def stop(self) -> Experiment: ...

    def last_stopped(self) -> tuple[Experiment | None, str | None]: ...


class ExperimentStore:
    """The running experiment in `root/experiment.json`; re-read when the file changes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / "experiment.json"
        self._cached: tuple[float, Experiment | None] | None = None

    def load(self) -> Experiment | None:
        try:
            stamp = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        if self._cached is not None and self._cached[0] == stamp:
            return self._cached[1]
        try:
            experiment = Experiment.from_dict(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            raise ExperimentError(f"{self.path} is not a valid experiment: {exc}") from exc
        self._cached = (stamp, experiment)
        return experiment

    def save(self, experiment: Experiment) -> None:
        if self.load() is not None:
            raise ExperimentError(f"an experiment is already running ({self.path}); stop it first")
        self._write(self.path, experiment.as_dict())

    def stop(self) -> Experiment:
        """End the running experiment; keep its record under `experiments/<id>.json`."""
        experiment = self.load()
        if experiment is None:
            raise ExperimentError(f"no experiment is running ({self.path} does not exist)")
        stopped = {**experiment.as_dict(), "stopped_at": datetime.now(UTC).isoformat()}
        self._write(self.root / "experiments" / f"{experiment.id}.json", stopped)
        self.path.unlink(missing_ok=True)
        return experiment

    def last_stopped(self) -> tuple[Experiment | None, str | None]:
        """The experiment stopped last, and when (the dashboard shows it), or (None, None)."""
        records = []
        for path in (self.root / "experiments").glob("*.json"):  # none without the folder
            try:
                data = json.loads(path.read_text())
                stopped_at = str(data.pop("stopped_at", ""))
                records.append((stopped_at, Experiment.from_dict(data)))
            except (OSError, ValueError, TypeError, KeyError):
                continue  # a damaged archive entry is skipped, not fatal to the dashboard
        if not records:
            return None, None
        stopped_at, experiment = max(records, key=lambda r: r[0])
        return experiment, stopped_at

    @staticmethod
    def _write(target: Path, data: dict[str, Any]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".experiment.", dir=target.parent)
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        os.replace(tmp, target)


@dataclass(frozen=True)
class RoutedSearch:
    """The hits one caller gets, and what the UBI query record says about where they came from."""

    hits: list[Hit]
    arm: str
    model_version: str
    index: str
    attributes: dict[str, Any]


class ArmRouter:
    """Routes each search to the caller's arm: that arm's model and index (or an interleave).

    Every routed search is counted in `ledger` (serving/rollout/arm_health.py) under its experiment
    and arm: failed or not, and its latency. Loading an arm's model is not part of the latency (a
    one-time cost per replica that would make a fresh candidate look slow), but a model that cannot
    be loaded counts as an error of its arm.
    """

    def __init__(
        self,
        store: Experiments,
        encoder_for: Callable[[str], Encoder],
        index: SearchIndex,
        seed: int | None = None,
        ledger: HealthLedger | None = None,
    ) -> None:
        self.store = store
        self.encoder_for = encoder_for
        self.index = index
        self.ledger = ledger or HealthLedger()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    @property
    def health(self) -> dict[str, ArmHealth]:
        """This replica's per-arm counts of the newest experiment it served."""
        return self.ledger.latest()[1]

    def experiment(self) -> Experiment | None:
        return self.store.load()

    def search(
        self,
        experiment: Experiment,
        client_id: str | None,
        query: str,
        k: int,
        served: Encoder,
        *,
        fetch: int | None = None,
    ) -> RoutedSearch:
        """Search for `query` as `client_id`'s arm of `experiment`; `served` is the live model.

        `fetch` (>= k) asks a single arm for that many hits, for the caller to shuffle and cut to
        `k` (serving/rollout/randomize.py); an interleaved list always holds `k`.
        """
        interleave = experiment.mode == "interleave"
        arm = "interleave" if interleave else assign(experiment, client_id).name
        arms = [experiment.control, experiment.candidate] if interleave else [experiment.arm(arm)]
        started = time.perf_counter()
        try:
            encoders = [self._encoder(a, served) for a in arms]
            started = time.perf_counter()
            if interleave:
                result = self._interleave(experiment, query, k, encoders)
            else:
                result = self._one_arm(experiment, arms[0], query, fetch or k, encoders[0])
        except Exception:
            self._record(experiment.id, arm, started, failed=True)
            raise
        self._record(experiment.id, result.arm, started, failed=False)
        return result

    def _encoder(self, arm: Arm, served: Encoder) -> Encoder:
        if arm.model_version == served.version:
            return served
        return self.encoder_for(arm.model_version)

    def _one_arm(
        self, experiment: Experiment, arm: Arm, query: str, k: int, encoder: Encoder
    ) -> RoutedSearch:
        vector = encoder.encode([query])[0]
        hits = self.index.search_knn(vector, k, index=arm.index_alias)
        index = hits[0].index if hits else arm.index_alias
        attributes = {"experiment": experiment.id, "arm": arm.name, "index": index}
        return RoutedSearch(hits, arm.name, encoder.version, index, attributes)

    def _interleave(
        self, experiment: Experiment, query: str, k: int, encoders: list[Encoder]
    ) -> RoutedSearch:
        a = self._one_arm(experiment, experiment.control, query, k, encoders[0])
        b = self._one_arm(experiment, experiment.candidate, query, k, encoders[1])
        with self._lock:
            ids, teams = team_draft([h.id for h in a.hits], [h.id for h in b.hits], k, self._rng)
        by_id = {h.id: h for h in b.hits} | {h.id: h for h in a.hits}
        index = f"{a.index},{b.index}"
        attributes: dict[str, Any] = {
            "experiment": experiment.id,
            "arm": "interleave",
            "index": index,
            "interleave_teams": teams,
            "model_versions": [a.model_version, b.model_version],
        }
        version = f"{a.model_version}+{b.model_version}"
        return RoutedSearch([by_id[i] for i in ids], "interleave", version, index, attributes)

    def _record(self, experiment: str, arm: str, started: float, failed: bool) -> None:
        self.ledger.record(experiment, arm, 1000 * (time.perf_counter() - started), failed)
