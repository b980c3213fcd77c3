"""Typed configuration: model defaults < YAML file < `CLICKTUNE_*` environment variables.

One settings model per component; each package owns its own (`ingest.config`, `serving.config`,
`tuner.config`) and this module composes them with the connection settings that only the
composition roots need. Nested keys use a double underscore in the environment:
`CLICKTUNE_OPENSEARCH__URL=https://search:9200`, `CLICKTUNE_INGEST__BATCH_SIZE=500`.

Secrets (passwords, tokens) come only from the environment: a YAML file that sets one is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ingest.config import IngestSettings
from ingest.index_layout import Replicas
from serving.config import ServingSettings
from serving.models.registry_config import RegistrySettings
from tuner.config import TunerSettings

CONFIG_ENV = "CLICKTUNE_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"
# (section, key) pairs that may only come from the environment.
SECRET_KEYS = {
    ("opensearch", "password"),
    ("kafka", "sasl_password"),
    ("serving", "admin_token"),
    ("admin", "token"),
    ("auth", "read_token"),
    ("auth", "write_token"),
    ("auth", "query_signing_key"),
    ("registry", "mlflow_token"),
}


class ConfigError(ValueError):
    """The configuration file or environment is not valid; the message names the key and rule."""


def clicktune_home() -> Path:
    """Where downloads, service data, models and the registry live (`$CLICKTUNE_HOME`)."""
    return Path(os.environ.get("CLICKTUNE_HOME", Path.home() / ".cache" / "clicktune")).expanduser()


class OpenSearchSettings(BaseModel):
    """How to reach OpenSearch: the local one by default, any cluster by configuration."""

    url: str = "http://127.0.0.1:9200"
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    internal_replicas: Replicas = Field(
        default="0-1",
        description="replicas of clicktune's own indexes (tasks and lease, arm health, "
        "serving.state's experiment, checkpoints and batches): a count "
        "or an auto-expand range; '0-1' keeps one node green and copies them to a second",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"opensearch.url {value!r} must start with http:// or https://")
        return value.rstrip("/")


class KafkaSettings(BaseModel):
    """How to reach Kafka: bootstrap servers plus optional SASL/SSL."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = Field(
        default="PLAINTEXT", pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$"
    )
    sasl_mechanism: str | None = Field(
        default=None, pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$"
    )
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    control_topic: str = "clicktune.control"


class LocalServicesSettings(BaseModel):
    """The OpenSearch, Kafka and MLflow tracking server that `clicktune services up` runs on
    loopback."""

    opensearch_version: str = "2.19.1"
    kafka_version: str = "4.1.1"
    opensearch_http_port: int = Field(default=9200, ge=1, le=65535)
    opensearch_transport_port: int = Field(default=9300, ge=1, le=65535)
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=9093, ge=1, le=65535)
    opensearch_heap: str = "1g"
    opensearch_nodes: int = Field(
        default=1,
        ge=1,
        le=9,
        description="nodes of the local OpenSearch; node n > 1 is a data node on the ports + n-1",
    )
    opensearch_extra_heap: str = Field(default="512m", description="heap of nodes 2 and up")
    kafka_heap: str = "512m"
    mlflow_port: int = Field(default=5000, ge=1, le=65535, description="the MLflow server's")
    mlflow_workers: int = Field(default=1, ge=1, le=16, description="its uvicorn workers")
    run_as_user: str = Field(default="clicktune-os", description="OpenSearch refuses root")
    start_timeout_s: float = Field(default=180.0, gt=0)


class AdminSettings(BaseModel):
    """Admin API access. The token has no default: set CLICKTUNE_ADMIN__TOKEN."""

    token: SecretStr | None = None


class AuthSettings(BaseModel):
    """Bearer tokens of the serving API per scope (serving/api/auth.py), and the query id key.

    The admin token (CLICKTUNE_ADMIN__TOKEN) grants every scope; a write token grants write
    and read. Tokens and the key have no defaults: CLICKTUNE_AUTH__READ_TOKEN,
    CLICKTUNE_AUTH__WRITE_TOKEN, CLICKTUNE_AUTH__QUERY_SIGNING_KEY.
    """

    read_token: SecretStr | None = None
    write_token: SecretStr | None = None
    protect_reads: bool = Field(
        default=False,
        description="embeddings, search, models and task reads need a read token too "
        "(off: open, as ml-commons connectors and front ends call them)",
    )
    query_signing_key: SecretStr | None = Field(
        default=None, description="HMAC key: /v1/search issues signed query ids (query_ids.py)"
    )


class Settings(BaseSettings):
    """Everything clicktune reads from configuration, one section per component."""

    model_config = SettingsConfigDict(
        env_prefix="CLICKTUNE_", env_nested_delimiter="__", extra="forbid"
    )

    home: Path = Field(default_factory=clicktune_home)
    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    services: LocalServicesSettings = Field(default_factory=LocalServicesSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    tuner: TunerSettings = Field(default_factory=TunerSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the YAML file, which the caller passes as init kwargs.
        return (env_settings, init_settings)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML config file, refusing secrets and anything that is not a mapping."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {str(path)!r} does not exist") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    for section, key in SECRET_KEYS:
        if isinstance(data.get(section), dict) and data[section].get(key) is not None:
            env = f"CLICKTUNE_{section.upper()}__{key.upper()}"
            raise ConfigError(
                f"{section}.{key} is set in {str(path)!r}: secrets come only from the "
                f"environment ({env})"
            )
    return data


def load_settings(path: Path | None = None) -> Settings:
    """Load settings from `path`, else `$CLICKTUNE_CONFIG`, else configs/default.yaml if present."""
    if path is None and os.environ.get(CONFIG_ENV):
        path = Path(os.environ[CONFIG_ENV])
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    data = read_yaml(path) if path is not None else {}
    try:
        return Settings(**data)
    except ValueError as exc:
        raise ConfigError(f"invalid configuration ({path or 'defaults'}):\n{exc}") from exc
