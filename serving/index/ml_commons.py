"""OpenSearch calling clicktune: an ml-commons remote connector and model pointing at the
service's OpenAI-compatible `/v1/embeddings`, one per side of the served model.

    document  model `<name>` and a `text_embedding` ingest pipeline using it: documents are
              stored with the vectors the index holds (its connector sends no `input_type`,
              which the service reads as document)
    query     model `<name>-query`, whose connector sends `"input_type": "query"`: the model a
              `neural` query names, so a query model embeds the queries; no pipeline

For a text or CLIP model both sides embed alike; a query model needs both. Every function takes
the OpenSearch client first. `connect` is idempotent by name: a connector already pointing at the
same URL and its deployed model are reused; ones pointing elsewhere are undeployed and deleted
once the new model answers, so re-running never piles up models.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import httpx
from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, OpenSearchException, OpenSearchWarning

from serving.config import MlCommonsSettings
from serving.encoders.input_type import InputType
from serving.errors import MlCommonsError

__all__ = ["Connection", "connect", "model_name", "service_dimension", "wait_for_task"]

ML = "/_plugins/_ml"
SEARCH_ALL = {"query": {"match_all": {}}, "size": 1000}
POLL_S = 0.5
_PIPELINE_SETTINGS = ("default_pipeline", "final_pipeline")


@dataclass(frozen=True)
class Connection:
    """What `connect` left in OpenSearch, and what must be re-created for the new dimension
    (the query side has no pipeline)."""

    connector_id: str
    model_id: str
    pipeline: str | None
    dimension: int
    recreate_indexes: list[str] = field(default_factory=list)
    recreate_pipelines: list[str] = field(default_factory=list)
    input_type: InputType = InputType.DOCUMENT

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_type": self.input_type.value,
            "connector_id": self.connector_id,
            "model_id": self.model_id,
            "pipeline": self.pipeline,
            "dimension": self.dimension,
            "recreate": {"indexes": self.recreate_indexes, "pipelines": self.recreate_pipelines},
        }


def service_dimension(service_url: str, timeout_s: float = 10.0) -> int:
    """The embedding dimension the clicktune service at `service_url` serves now."""
    url = f"{service_url.rstrip('/')}/v1/models"
    try:
        response = httpx.get(url, timeout=timeout_s)
        response.raise_for_status()
        return int(response.json()["data"][0]["dimension"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise MlCommonsError(
            f"cannot read the model dimension from {url} (is `clicktune serve` running?): {exc}"
        ) from exc


def model_name(settings: MlCommonsSettings, input_type: InputType) -> str:
    """The ml-commons connector and model name of one side: `<name>`, `<name>-query`."""
    return settings.name if input_type is InputType.DOCUMENT else f"{settings.name}-query"


def connect(
    client: OpenSearch,
    service_url: str,
    dimension: int,
    settings: MlCommonsSettings,
    input_type: InputType = InputType.DOCUMENT,
) -> Connection:
    """Make ml-commons call `service_url` for one side, documents (with the ingest pipeline) or
    queries (the model `neural` queries name); see the module doc."""
    name = model_name(settings, input_type)
    endpoint = f"{service_url.rstrip('/')}/v1/embeddings"
    connectors = _find(client, "connectors", name)
    models = [m for m in _find(client, "models", name) if "chunk_number" not in m]
    kept = next((c for c in connectors if _endpoint(c) == endpoint), None)
    kept_model = next((m for m in models if kept and m.get("connector_id") == kept["_id"]), None)
    connector_id = kept["_id"] if kept else _create_connector(client, name, endpoint, input_type)
    model_id = _deployed_model(client, kept_model, connector_id, name, settings)
    if input_type is InputType.DOCUMENT:
        pipeline = _pipeline(model_id, settings)
        _request(client, "PUT", f"/_ingest/pipeline/{settings.pipeline}", pipeline)
    # Only now that the new model answers: retire the ones it replaces.
    replaced = [m["_id"] for m in models if m["_id"] != model_id]
    for old_model in replaced:
        _delete_model(client, old_model)
    for connector in connectors:
        if connector["_id"] != connector_id:
            _request(client, "DELETE", f"{ML}/connectors/{connector['_id']}")
    if input_type is InputType.QUERY:
        return Connection(connector_id, model_id, None, dimension, input_type=input_type)
    return Connection(
        connector_id,
        model_id,
        settings.pipeline,
        dimension,
        recreate_indexes=_mismatched_indexes(
            client, settings.pipeline, settings.field_map, dimension
        ),
        recreate_pipelines=_pipelines_naming(client, replaced, skip=settings.pipeline),
    )


def wait_for_task(client: OpenSearch, task_id: str, timeout_s: float) -> str:
    """Poll ml-commons task `task_id` until it completes; return its `model_id`."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        task = _request(client, "GET", f"{ML}/tasks/{task_id}")
        state = task.get("state", "unknown")
        if state == "COMPLETED":
            return str(task["model_id"])
        if state in ("FAILED", "CANCELLED", "COMPLETED_WITH_ERROR"):
            raise MlCommonsError(f"ml-commons task {task_id} ended {state}: {task.get('error')}")
        time.sleep(POLL_S)
    raise MlCommonsError(
        f"ml-commons task {task_id} still {state} after {timeout_s:.0f} s "
        "(raise serving.ml_commons.deploy_timeout_s, or check the cluster's ml-commons logs)"
    )


def _deployed_model(
    client: OpenSearch,
    model: dict[str, Any] | None,
    connector_id: str,
    name: str,
    settings: MlCommonsSettings,
) -> str:
    """The id of a model on `connector_id` that is DEPLOYED, deploying `model` or a new one.

    A register task completes before its deployment does, so a model found DEPLOYING is waited
    for, never deployed again (ml-commons fails a second deploy of it as a duplicate).
    """
    state = model.get("model_state") if model is not None else None
    if model is not None and state in ("DEPLOYED", "DEPLOYING"):
        model_id = str(model["_id"])
    elif model is not None:
        task = _request(client, "POST", f"{ML}/models/{model['_id']}/_deploy")
        model_id = wait_for_task(client, task["task_id"], settings.deploy_timeout_s)
    else:
        body = {"name": name, "function_name": "remote", "connector_id": connector_id}
        task = _request(client, "POST", f"{ML}/models/_register?deploy=true", body)
        model_id = wait_for_task(client, task["task_id"], settings.deploy_timeout_s)
    _wait_deployed(client, model_id, settings.deploy_timeout_s)
    return model_id


def _wait_deployed(client: OpenSearch, model_id: str, timeout_s: float) -> None:
    """Poll ml-commons model `model_id` (a realtime GET) until its state is DEPLOYED."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        state = _request(client, "GET", f"{ML}/models/{model_id}").get("model_state", "unknown")
        if state == "DEPLOYED":
            return
        if state == "DEPLOY_FAILED":
            raise MlCommonsError(
                f"ml-commons model {model_id} failed to deploy (see the cluster's ml-commons logs)"
            )
        time.sleep(POLL_S)
    raise MlCommonsError(
        f"ml-commons model {model_id} still {state} after {timeout_s:.0f} s "
        "(raise serving.ml_commons.deploy_timeout_s, or check the cluster's ml-commons logs)"
    )


def _create_connector(client: OpenSearch, name: str, endpoint: str, input_type: InputType) -> str:
    parameters = {"model": "clicktune"}
    fields = '"input": ${parameters.input}, "model": "${parameters.model}"'
    if input_type is InputType.QUERY:  # documents: no input_type, the service's default
        parameters["input_type"] = input_type.value
        fields += ', "input_type": "${parameters.input_type}"'
    body = {
        "name": name,
        "description": f"clicktune embedding service at {endpoint}, {input_type.value} side",
        "version": 1,
        "protocol": "http",
        "parameters": parameters,
        "credential": {"key": "unused"},  # ml-commons refuses a connector without one
        "actions": [
            {
                "action_type": "predict",
                "method": "POST",
                "url": endpoint,
                "headers": {"Content-Type": "application/json"},
                "request_body": f"{{ {fields} }}",
                "pre_process_function": "connector.pre_process.openai.embedding",
                "post_process_function": "connector.post_process.openai.embedding",
            }
        ],
    }
    return str(_request(client, "POST", f"{ML}/connectors/_create", body)["connector_id"])


def _delete_model(client: OpenSearch, model_id: str) -> None:
    _request(client, "POST", f"{ML}/models/{model_id}/_undeploy")
    _request(client, "DELETE", f"{ML}/models/{model_id}")


def _pipeline(model_id: str, settings: MlCommonsSettings) -> dict[str, Any]:
    processor = {"model_id": model_id, "field_map": dict(settings.field_map)}
    return {
        "description": f"clicktune: embed {sorted(settings.field_map)} with ml-commons model",
        "processors": [{"text_embedding": processor}],
    }


def _mismatched_indexes(
    client: OpenSearch, pipeline: str, field_map: dict[str, str], dimension: int
) -> list[str]:
    """Indexes that ingest through `pipeline` but hold vectors of another dimension."""
    settings = _request(
        client, "GET", "/_all/_settings/index.default_pipeline,index.final_pipeline"
    )
    users = [
        name
        for name, body in settings.items()
        if pipeline in (body["settings"].get("index", {}).get(k) for k in _PIPELINE_SETTINGS)
    ]
    if not users:
        return []
    mappings = _request(client, "GET", f"/{','.join(users)}/_mapping")
    return sorted(
        name
        for name, body in mappings.items()
        if any(
            body["mappings"].get("properties", {}).get(target, {}).get("dimension", dimension)
            != dimension
            for target in field_map.values()
        )
    )


def _pipelines_naming(client: OpenSearch, model_ids: list[str], skip: str) -> list[str]:
    """Ingest pipelines (other than `skip`) that still name a model id that was replaced."""
    if not model_ids:
        return []
    pipelines = _request(client, "GET", "/_ingest/pipeline", missing={})
    return sorted(
        name
        for name, body in pipelines.items()
        if name != skip and any(m in str(body) for m in model_ids)
    )


def _find(client: OpenSearch, kind: str, name: str) -> list[dict[str, Any]]:
    """ml-commons connectors or models named `name` (their `_source` plus `_id`)."""
    with warnings.catch_warnings():  # "this request accesses system indices": it is ml-commons'
        warnings.simplefilter("ignore", OpenSearchWarning)
        found = _request(client, "POST", f"{ML}/{kind}/_search", SEARCH_ALL, missing={})
    hits = found.get("hits", {}).get("hits", [])
    return [{**h["_source"], "_id": h["_id"]} for h in hits if h["_source"].get("name") == name]


def _endpoint(connector: dict[str, Any]) -> str | None:
    actions = connector.get("actions") or [{}]
    return actions[0].get("url")


def _request(
    client: OpenSearch,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    missing: dict[str, Any] | None = None,
) -> Any:
    """One REST call; a 404 answers `missing` when given, any other failure is MlCommonsError."""
    try:
        return client.transport.perform_request(method, path, body=body)
    except NotFoundError as exc:
        if missing is not None:
            return missing
        raise MlCommonsError(f"{method} {path}: not found: {exc}") from exc
    except OpenSearchException as exc:
        raise MlCommonsError(f"{method} {path} failed: {exc}") from exc
