"""Settings of the model registry: which backend holds model versions, aliases and files."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator


class RegistryBackend(StrEnum):
    local = "local"  # a folder under $CLICKTUNE_HOME (serving/models/registry.py)
    mlflow = "mlflow"  # the MLflow model registry behind a tracking server


class RegistrySettings(BaseModel):
    """Where model versions, aliases and their files live: a local folder, or MLflow."""

    backend: RegistryBackend = RegistryBackend.local
    mlflow_url: str | None = Field(
        default=None,
        description="the MLflow tracking server; None: the local one of `clicktune services up` "
        "(http://127.0.0.1:<services.mlflow_port>)",
    )
    mlflow_token: SecretStr | None = Field(
        default=None, description="bearer token of the MLflow server (environment only)"
    )
    model_name: str = Field(
        default="clicktune", min_length=1, description="the MLflow registered model"
    )
    experiment: str = Field(
        default="clicktune-registry",
        min_length=1,
        description="the MLflow experiment whose runs hold the versions' files",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="local copies of the versions' files; None: <home>/models/mlflow-cache",
    )
    timeout_s: float = Field(default=10.0, gt=0, le=600, description="per MLflow request")
    retries: int = Field(
        default=2, ge=0, le=10, description="a request the server did not answer is tried again"
    )
    backoff_s: float = Field(
        default=0.25, ge=0, le=60, description="first wait before a retry, doubling, capped at 2 s"
    )

    @field_validator("mlflow_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"registry.mlflow_url {value!r} must start with http:// or https://")
        return value.rstrip("/") if value is not None else None
