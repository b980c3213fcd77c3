"""Client factories: the one place that turns connection settings into live clients.

Only composition roots (CLI commands, test fixtures) call these; the packages below take the
clients they need as constructor arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opensearchpy import OpenSearch

from clicktune.config import KafkaSettings, OpenSearchSettings, Settings

if TYPE_CHECKING:
    from serving.models.registries import ModelRegistry


def opensearch_client(settings: OpenSearchSettings, **overrides: Any) -> OpenSearch:
    """An OpenSearch client for `settings` (basic auth, TLS and client certs as configured)."""
    kwargs: dict[str, Any] = {
        "hosts": [settings.url],
        "timeout": settings.timeout_s,
        "verify_certs": settings.verify_certs,
        "ssl_show_warn": settings.verify_certs,
    }
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else ""
        kwargs["http_auth"] = (settings.username, password)
    if settings.ca_certs is not None:
        kwargs["ca_certs"] = str(settings.ca_certs)
    if settings.client_cert is not None:
        kwargs["client_cert"] = str(settings.client_cert)
    if settings.client_key is not None:
        kwargs["client_key"] = str(settings.client_key)
    kwargs.update(overrides)
    return OpenSearch(**kwargs)


def kafka_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection keyword arguments shared by kafka-python's producer, consumer and admin."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password is not None:
            options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_cafile is not None:
        options["ssl_cafile"] = str(settings.ssl_cafile)
    return options


def mlflow_url(settings: Settings) -> str:
    """The MLflow tracking server clicktune uses: `registry.mlflow_url`, else the local one of
    `clicktune services up` on `services.mlflow_port`."""
    if settings.registry.mlflow_url is not None:
        return settings.registry.mlflow_url
    return f"http://127.0.0.1:{settings.services.mlflow_port}"


def model_registry(settings: Settings) -> ModelRegistry:
    """The model registry `registry.backend` selects: `<home>/models`, or MLflow."""
    from serving.models.registries import open_registry

    return open_registry(settings.registry, settings.home, mlflow_url(settings))
