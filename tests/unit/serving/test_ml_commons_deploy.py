"""`connect` against a fake ml-commons: a model still deploying is waited for, not redeployed.

ml-commons completes a `_register?deploy=true` task before the deployment it starts, so a second
`connect` right after the first finds the model DEPLOYING; deploying it again fails the cluster's
deployment as a duplicate (seen in CI).
"""

from __future__ import annotations

from typing import Any

import pytest

from serving.config import MlCommonsSettings
from serving.errors import MlCommonsError
from serving.index import ml_commons

URL = "http://127.0.0.1:8080"


class FakeMl:
    """Just enough of ml-commons' REST API: one connector and one model with a state sequence."""

    def __init__(self, states: list[str]) -> None:
        self.states = states
        self.calls: list[tuple[str, str]] = []
        self.transport = self

    def perform_request(self, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path))
        if path.endswith("/connectors/_search"):
            source = {"name": "ct", "actions": [{"url": f"{URL}/v1/embeddings"}]}
            return {"hits": {"hits": [{"_id": "c1", "_source": source}]}}
        if path.endswith("/models/_search"):
            source = {"name": "ct", "connector_id": "c1", "model_state": self.states[0]}
            return {"hits": {"hits": [{"_id": "m1", "_source": source}]}}
        if path == "/_plugins/_ml/models/m1" and method == "GET":
            return {"model_state": self.states.pop(0) if len(self.states) > 1 else self.states[0]}
        if path.endswith("/_deploy"):
            return {"task_id": "t1"}
        if path == "/_plugins/_ml/tasks/t1":
            return {"state": "COMPLETED", "model_id": "m1"}
        if path.startswith("/_all/_settings") or path == "/_ingest/pipeline":
            return {}
        if method == "PUT" and path.startswith("/_ingest/pipeline/"):
            return {"acknowledged": True}
        raise AssertionError(f"unexpected request {method} {path}")


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ml_commons, "POLL_S", 0.0)


def _settings() -> MlCommonsSettings:
    return MlCommonsSettings(name="ct", pipeline="ct-embed", deploy_timeout_s=5)


def test_a_deploying_model_is_waited_for_and_never_deployed_twice() -> None:
    fake = FakeMl(["DEPLOYING", "DEPLOYING", "DEPLOYED"])
    result = ml_commons.connect(fake, URL, 8, _settings())  # type: ignore[arg-type]
    assert result.model_id == "m1"
    assert not [c for c in fake.calls if c[1].endswith("/_deploy")]
    assert fake.calls.count(("GET", "/_plugins/_ml/models/m1")) == 3


def test_an_undeployed_model_is_deployed_and_then_waited_for() -> None:
    fake = FakeMl(["UNDEPLOYED", "DEPLOYING", "DEPLOYED"])
    assert ml_commons.connect(fake, URL, 8, _settings()).model_id == "m1"  # type: ignore[arg-type]
    assert ("POST", "/_plugins/_ml/models/m1/_deploy") in fake.calls


def test_a_failed_deployment_is_an_error_naming_the_model() -> None:
    fake = FakeMl(["DEPLOYING", "DEPLOY_FAILED"])
    with pytest.raises(MlCommonsError, match="m1 failed to deploy"):
        ml_commons.connect(fake, URL, 8, _settings())  # type: ignore[arg-type]
