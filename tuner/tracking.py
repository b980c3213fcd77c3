"""Experiment tracking and lineage in MLflow: runs, metrics, registered versions, aliases.

Every hyperparameter set of an iteration is one MLflow run (params, validation metrics, the
loss curve) in one experiment. Only after export and the parity check does the winner become a
version of the registered model `clicktune-text`, tagged with its lineage (clicktune version,
batch id, parent, config, metrics, dimension, kind); the aliases `production` and `candidate`
mirror the moves the tuner makes in the LocalRegistry, which stays the source serving reads.
The run's artifacts are `clicktune.json`, `tokenizer.json` and `registry.json`, a pointer to the
LocalRegistry directory: copying the ONNX graph and torch weights (~180 MB a version) again
into MLflow would double the disk for nothing serving reads.

MLflow is imported lazily (it takes seconds); `NullTracker` stands in when tracking is off.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuner.config import TunerSettings

__all__ = [
    "Lineage",
    "MlflowTracker",
    "NullTracker",
    "RunLog",
    "Tracker",
    "default_tracking_uri",
    "tracker_from_settings",
]

log = logging.getLogger(__name__)

REGISTERED_MODEL = "clicktune-text"
SMALL_ARTIFACTS = ("clicktune.json", "tokenizer.json")


@dataclass(frozen=True)
class Lineage:
    """Where a registered version comes from; stored as tags of its MLflow version."""

    version: str
    batch_id: str
    parent: str | None
    kind: str
    dimension: int
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def tags(self) -> dict[str, str]:
        values = asdict(self)
        return {
            "clicktune_version": self.version,
            "batch_id": self.batch_id,
            "parent": self.parent or "",
            "kind": self.kind,
            "dimension": str(self.dimension),
            "config": json.dumps(values["config"], sort_keys=True, default=str),
            "metrics": json.dumps(values["metrics"], sort_keys=True),
        }


class RunLog(Protocol):
    """One tracked run: what a training run reports while it goes."""

    run_id: str | None

    def log_metrics(self, metrics: Mapping[str, float], prefix: str = "") -> None: ...

    def log_curve(self, name: str, values: Sequence[float]) -> None: ...


class Tracker(Protocol):
    """Runs, registered versions and aliases (`MlflowTracker`, or `NullTracker`)."""

    def run(self, name: str, params: Mapping[str, Any]) -> Any: ...  # context manager of RunLog

    def register(self, run_id: str | None, lineage: Lineage, model_dir: Path) -> None: ...

    def set_alias(self, alias: str, version: str) -> None: ...


class _NullRun:
    run_id: str | None = None

    def log_metrics(self, metrics: Mapping[str, float], prefix: str = "") -> None:
        return None

    def log_curve(self, name: str, values: Sequence[float]) -> None:
        return None


class NullTracker:
    """Tracks nothing (tracking switched off, or tests that do not look at it)."""

    @contextmanager
    def run(self, name: str, params: Mapping[str, Any]) -> Iterator[RunLog]:
        yield _NullRun()

    def register(self, run_id: str | None, lineage: Lineage, model_dir: Path) -> None:
        return None

    def set_alias(self, alias: str, version: str) -> None:
        return None


class _MlflowRun:
    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id: str | None = run_id

    def log_metrics(self, metrics: Mapping[str, float], prefix: str = "") -> None:
        for name, value in metrics.items():
            self.client.log_metric(self.run_id, _key(prefix + name), float(value))

    def log_curve(self, name: str, values: Sequence[float]) -> None:
        for step, value in enumerate(values):
            self.client.log_metric(self.run_id, name, float(value), step=step)


class MlflowTracker:
    """MLflow at `tracking_uri` (a local SQLite file by default, or a tracking server)."""

    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: str | None = None
    ) -> None:
        from mlflow import MlflowClient

        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        self.experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=artifact_location)
        )

    @contextmanager
    def run(self, name: str, params: Mapping[str, Any]) -> Iterator[RunLog]:
        run = self.client.create_run(self.experiment_id, run_name=name)
        run_id = run.info.run_id
        for key, value in params.items():
            self.client.log_param(run_id, _key(key), str(value))
        try:
            yield _MlflowRun(self.client, run_id)
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def register(self, run_id: str | None, lineage: Lineage, model_dir: Path) -> None:
        """Make the run's model a version of `clicktune-text` with its lineage as tags.

        The lineage metrics the run lacks (those measured after training: the int8 variant's,
        the batch's counts) are logged on the run too, so the run shows every figure."""
        from mlflow.exceptions import MlflowException

        if run_id is None:
            run_id = self.client.create_run(
                self.experiment_id, run_name=lineage.version
            ).info.run_id
        self._log_pointer(run_id, model_dir)
        self._log_missing_metrics(run_id, lineage.metrics)
        try:
            self.client.create_registered_model(REGISTERED_MODEL)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        source = f"{self.client.get_run(run_id).info.artifact_uri}/model"
        self.client.create_model_version(
            REGISTERED_MODEL, source=source, run_id=run_id, tags=lineage.tags()
        )

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at the MLflow version of clicktune `version` (a no-op if untracked)."""
        found = self._model_version(version)
        if found is None:
            log.info("mlflow: %s has no registered version, alias %s not mirrored", version, alias)
            return
        self.client.set_registered_model_alias(REGISTERED_MODEL, alias, found.version)

    def lineage(self) -> dict[str, dict[str, Any]]:
        """Per clicktune version: its MLflow version number, aliases and lineage tags."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(REGISTERED_MODEL)
        except MlflowException:
            return {}
        aliases: dict[str, list[str]] = {}
        for alias, number in (model.aliases or {}).items():
            aliases.setdefault(str(number), []).append(alias)
        rows = {}
        for found in self.client.search_model_versions(f"name='{REGISTERED_MODEL}'"):
            tags = dict(found.tags)
            rows[tags.get("clicktune_version", "")] = {
                "mlflow_version": int(found.version),
                "run_id": found.run_id,
                "batch_id": tags.get("batch_id"),
                "parent": tags.get("parent") or None,
                "kind": tags.get("kind"),
                "dimension": int(tags.get("dimension") or 0),
                "metrics": json.loads(tags.get("metrics") or "{}"),
                "config": json.loads(tags.get("config") or "{}"),
                "mlflow_aliases": sorted(aliases.get(str(found.version), [])),
            }
        return rows

    def _model_version(self, version: str) -> Any:
        query = f"name='{REGISTERED_MODEL}' and tag.clicktune_version='{version}'"
        found = self.client.search_model_versions(query)
        return found[0] if found else None

    def _log_missing_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        logged = self.client.get_run(run_id).data.metrics
        for name, value in metrics.items():
            if _key(name) not in logged:
                self.client.log_metric(run_id, _key(name), float(value))

    def _log_pointer(self, run_id: str, model_dir: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="clicktune-mlflow-") as tmp:
            pointer = Path(tmp) / "registry.json"
            pointer.write_text(json.dumps({"path": str(model_dir)}))
            self.client.log_artifact(run_id, str(pointer), "model")
        for name in SMALL_ARTIFACTS:
            if (model_dir / name).is_file():
                self.client.log_artifact(run_id, str(model_dir / name), "model")


def default_tracking_uri(home: Path) -> str:
    """sqlite:///<home>/mlflow/mlflow.db, the local store."""
    return f"sqlite:///{(Path(home) / 'mlflow' / 'mlflow.db').resolve()}"


def tracker_from_settings(settings: TunerSettings, home: Path) -> Tracker:
    """The tracker the settings ask for: MLflow (local store or server) or none."""
    if not settings.mlflow_enabled:
        return NullTracker()
    uri = settings.mlflow_tracking_uri
    artifacts = None
    if uri is None:
        (Path(home) / "mlflow").mkdir(parents=True, exist_ok=True)
        uri = default_tracking_uri(home)
        artifacts = (Path(home) / "mlflow" / "artifacts").resolve().as_uri()
    return MlflowTracker(uri, settings.mlflow_experiment, artifacts)


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and spaces; '@' in 'ndcg@10' is not one."""
    return name.replace("@", "_at_")
