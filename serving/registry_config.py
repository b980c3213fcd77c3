"""Settings of the model registry: which backend holds model versions, aliases and files."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, field_validator


class RegistryBackend(StrEnum):
    local = "local"  # a folder under $CLICKTUNE_HOME (serving/registry.py)
    mlflow = "mlflow"  # the MLflow model registry behind a tracking server


class RegistrySettings(BaseModel):
    """Where model versions, aliases and their files live: a local folder, or MLflow."""

    backend: RegistryBackend = RegistryBackend.local
    mlflow_url: str | None = Field(
        default=None,
        description="the MLflow tracking server; None: the local one of `clicktune services up` "
        "(http://127.0.0.1:<services.mlflow_port>)",
    )

    @field_validator("mlflow_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"registry.mlflow_url {value!r} must start with http:// or https://")
        return value.rstrip("/") if value is not None else None
