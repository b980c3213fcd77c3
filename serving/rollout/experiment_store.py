"""The running A/B experiment kept in OpenSearch, so replicas and workers on any host share it.

The same interface as the file store (`ab.ExperimentStore`: load, save, stop), chosen by
`serving.state.backend: opensearch`. One document per scope (the live document alias: two
deployments on one cluster keep two experiments) in `serving.state.experiments_index`:

    running:<scope>          {"kind": "running", "scope", "experiment": {...}}
    stopped:<scope>:<id>     {"kind": "stopped", "scope", "at": stopped_at, "experiment": {...}}

`save` creates the running document only if absent (`op_type=create`): two starts at once, one
wins. `stop` deletes it only if it is still the document it read (`if_seq_no`), so a stop never
ends an experiment someone started after it looked. `load` is on every search of every replica:
it re-reads OpenSearch at most every `cache_s` seconds, which bounds how late a replica learns of
a start or stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from serving.errors import ExperimentError, StateConflictError, StateError
from serving.rollout.ab import Experiment
from serving.state.documents import OpenSearchDocuments, Stored

__all__ = ["OpenSearchExperimentStore"]


class OpenSearchExperimentStore:
    """The running experiment of `scope` as one OpenSearch document, cached for `cache_s`."""

    def __init__(
        self,
        documents: OpenSearchDocuments,
        scope: str,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.documents = documents
        self.scope = scope
        self.cache_s = cache_s
        self.clock = clock
        self._cached: tuple[float, Stored | None] | None = None

    @property
    def running_id(self) -> str:
        return f"running:{self.scope}"

    def load(self) -> Experiment | None:
        """The running experiment, as read at most `cache_s` seconds ago."""
        now = self.clock()
        if self._cached is None or now - self._cached[0] >= self.cache_s:
            self._cached = (now, self._read())
        stored = self._cached[1]
        return None if stored is None else self._experiment(stored)

    def save(self, experiment: Experiment) -> None:
        """Start `experiment`; refused while another one of this scope runs."""
        body = {"kind": "running", "scope": self.scope, "experiment": experiment.as_dict()}
        self._cached = None
        try:
            seq = self.documents.put(self.running_id, body)  # only if none is running
        except StateConflictError as exc:
            raise ExperimentError(
                f"an experiment is already running for {self.scope!r} "
                f"({self.documents.where}); stop it first"
            ) from exc
        except StateError as exc:
            raise ExperimentError(f"cannot start experiment {experiment.id!r}: {exc}") from exc
        self._cached = (self.clock(), Stored(body, seq))

    def stop(self) -> Experiment:
        """End the running experiment; keep its record as `stopped:<scope>:<id>`."""
        stored = self._read()
        self._cached = None
        if stored is None:
            raise ExperimentError(
                f"no experiment is running for {self.scope!r} ({self.documents.where})"
            )
        experiment = self._experiment(stored)
        try:
            self.documents.delete(self.running_id, after=stored.seq)
            at = datetime.now(UTC).isoformat()
            self.documents.overwrite(
                f"stopped:{self.scope}:{experiment.id}",
                {
                    "kind": "stopped",
                    "scope": self.scope,
                    "at": at,
                    "experiment": experiment.as_dict(),
                },
            )
        except StateError as exc:
            raise ExperimentError(f"cannot stop experiment {experiment.id!r}: {exc}") from exc
        return experiment

    def last_stopped(self) -> tuple[Experiment | None, str | None]:
        """The experiment of this scope stopped last, and when (dashboard), or (None, None)."""
        try:
            body = self.documents.newest("stopped", self.scope)
        except StateError as exc:
            raise ExperimentError(f"cannot read the stopped experiments: {exc}") from exc
        if body is None:
            return None, None
        return self._experiment(Stored(body, (0, 0))), str(body.get("at"))

    def _read(self) -> Stored | None:
        try:
            return self.documents.get(self.running_id)
        except StateError as exc:
            raise ExperimentError(f"cannot read the running experiment: {exc}") from exc

    def _experiment(self, stored: Stored) -> Experiment:
        try:
            return Experiment.from_dict(stored.body["experiment"])
        except (ValueError, TypeError, KeyError) as exc:
            raise ExperimentError(
                f"{self.running_id!r} in {self.documents.where} is not a valid experiment: {exc}"
            ) from exc
