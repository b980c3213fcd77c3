"""`connect` registers one side per call: documents (model `<name>` and the ingest pipeline) or
queries (model `<name>-query`, whose connector asks the service for `input_type` query, no
pipeline); `clicktune opensearch connect --input-type` picks it and refuses anything else."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from typer.testing import CliRunner

from clicktune.cli import app
from serving.config import MlCommonsSettings
from serving.encoders.input_type import InputType
from serving.index import ml_commons

URL = "http://127.0.0.1:8080"


class EmptyMl:
    """ml-commons with nothing registered yet; records what is created."""

    def __init__(self) -> None:
        self.created: dict[str, list[Any]] = {"connectors": [], "models": [], "pipelines": []}
        self.transport = self

    def perform_request(self, method: str, path: str, body: Any = None) -> Any:
        if path.endswith("/_search") or path.startswith("/_all/_settings"):
            return {}
        if path.endswith("/connectors/_create"):
            self.created["connectors"].append(body)
            return {"connector_id": f"c-{body['name']}"}
        if path.endswith("/models/_register?deploy=true"):
            self.created["models"].append(body)
            return {"task_id": body["name"]}
        if path.startswith("/_plugins/_ml/tasks/"):
            return {"state": "COMPLETED", "model_id": f"m-{path.rsplit('/', 1)[1]}"}
        if method == "GET" and path.startswith("/_plugins/_ml/models/"):
            return {"model_state": "DEPLOYED"}
        if method == "PUT" and path.startswith("/_ingest/pipeline/"):
            self.created["pipelines"].append((path.rsplit("/", 1)[1], body))
            return {"acknowledged": True}
        raise AssertionError(f"unexpected request {method} {path}")


def _sent(connector: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """The body ml-commons sends to /v1/embeddings: the connector's template filled in."""
    action = connector["actions"][0]
    assert action["url"] == f"{URL}/v1/embeddings"
    body = action["request_body"].replace("${parameters.input}", json.dumps(texts))
    for key, value in connector["parameters"].items():
        body = body.replace(f"${{parameters.{key}}}", value)
    return json.loads(body)


def test_the_query_side_is_a_model_of_its_own_that_asks_for_query_vectors() -> None:
    fake = EmptyMl()
    settings = MlCommonsSettings(name="ct", pipeline="ct-embed")
    result = ml_commons.connect(fake, URL, 8, settings, InputType.QUERY)  # type: ignore[arg-type]
    (connector,), (model,) = fake.created["connectors"], fake.created["models"]
    assert connector["name"] == model["name"] == "ct-query"
    assert _sent(connector, ["drill"]) == {
        "input": ["drill"],
        "model": "clicktune",
        "input_type": "query",
    }
    assert fake.created["pipelines"] == []  # neural queries name the model; no pipeline
    assert result.as_dict() | {"recreate": None} == {
        "input_type": "query",
        "connector_id": "c-ct-query",
        "model_id": "m-ct-query",
        "pipeline": None,
        "dimension": 8,
        "recreate": None,
    }


def test_the_document_side_feeds_the_ingest_pipeline_with_the_service_s_default() -> None:
    fake = EmptyMl()
    settings = MlCommonsSettings(name="ct", pipeline="ct-embed")
    result = ml_commons.connect(fake, URL, 8, settings)  # type: ignore[arg-type]
    (connector,) = fake.created["connectors"]
    assert connector["name"] == "ct" and "input_type" not in _sent(connector, ["drill"])
    ((pipeline, body),) = fake.created["pipelines"]
    assert pipeline == "ct-embed" == result.pipeline
    assert body["processors"][0]["text_embedding"]["model_id"] == result.model_id == "m-ct"


@pytest.fixture()
def connected(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`clicktune opensearch connect` with a served dimension of 8 and a recording `connect`."""
    calls: list[dict[str, Any]] = []

    def fake_connect(client, url, dimension, settings, input_type):  # type: ignore[no-untyped-def]
        calls.append({"pipeline": settings.pipeline, "input_type": input_type})
        pipeline = settings.pipeline if input_type is InputType.DOCUMENT else None
        return ml_commons.Connection("c1", "m1", pipeline, dimension, input_type=input_type)

    monkeypatch.setattr(ml_commons, "connect", fake_connect)
    monkeypatch.setattr(ml_commons, "service_dimension", lambda url: 8)
    monkeypatch.setenv("CLICKTUNE_TUNER__MLFLOW_ENABLED", "false")
    return calls


def test_the_cli_connects_the_side_it_is_asked_for(connected: list[dict[str, Any]]) -> None:
    runner = CliRunner()
    query = runner.invoke(app, ["opensearch", "connect", "--url", URL, "--input-type", "query"])
    assert query.exit_code == 0, query.output
    assert query.stdout.strip() == "m1" and "name model_id m1 in neural queries" in query.stderr
    document = runner.invoke(app, ["opensearch", "connect", "--url", URL, "--json"])
    assert json.loads(document.stdout)["input_type"] == "document"
    assert [c["input_type"] for c in connected] == [InputType.QUERY, InputType.DOCUMENT]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--input-type", "passage"], "'passage' is not one of 'query', 'document'"),
        (["--input-type", "query", "--pipeline", "p"], "--pipeline and --field set up the ingest"),
    ],
)
def test_the_cli_refuses_an_unknown_side_naming_the_choices(
    connected: list[dict[str, Any]], arguments: list[str], message: str
) -> None:
    refused = CliRunner().invoke(app, ["opensearch", "connect", "--url", URL, *arguments])
    words = re.sub("[│╭╮╰╯─]", " ", refused.output).split()  # typer's error box
    assert refused.exit_code != 0 and message in " ".join(words)
    assert connected == []
