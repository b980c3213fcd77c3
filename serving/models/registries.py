"""The model registry seam: what every user of the registry calls, and the one factory.

`LocalRegistry` (serving/models/registry.py, a folder) and `MlflowRegistry`
(serving/models/mlflow_registry.py, the MLflow model registry behind a tracking server) both
implement `ModelRegistry`; the composition roots get theirs from `open_registry`, chosen by
`registry.backend`.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import Protocol

from serving.models.mlflow_registry import MlflowRegistry
from serving.models.mlflow_rest import MlflowRest
from serving.models.registry import LocalRegistry, ModelVersion
from serving.models.registry_config import RegistryBackend, RegistrySettings

__all__ = ["ModelRegistry", "open_registry"]


class ModelRegistry(Protocol):
    """Model versions (immutable directories) and named aliases that move between them."""

    @property
    def location(self) -> str: ...

    def add(self, src_dir: Path, version: str | None = None) -> ModelVersion: ...

    def get(self, ref: str) -> ModelVersion: ...

    def list(self) -> builtins.list[ModelVersion]: ...

    def aliases(self) -> dict[str, str]: ...

    def set_alias(self, alias: str, version: str) -> None: ...

    def alias_history(self, alias: str) -> builtins.list[str]: ...

    def rollback_alias(self, alias: str) -> str: ...

    def archive(self, version: str, drop_aliases: tuple[str, ...] = ("candidate",)) -> object: ...


def open_registry(settings: RegistrySettings, home: Path, mlflow_url: str) -> ModelRegistry:
    """The registry `settings.backend` names: `<home>/models`, or MLflow at `mlflow_url` with
    its files cached in `settings.cache_dir` (default `<home>/models/mlflow-cache`)."""
    if settings.backend == RegistryBackend.local:
        return LocalRegistry(home / "models")
    token = settings.mlflow_token.get_secret_value() if settings.mlflow_token else None
    rest = MlflowRest(
        mlflow_url,
        timeout_s=settings.timeout_s,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        token=token,
    )
    cache = settings.cache_dir or home / "models" / "mlflow-cache"
    return MlflowRegistry(rest, cache, settings.model_name, settings.experiment)
