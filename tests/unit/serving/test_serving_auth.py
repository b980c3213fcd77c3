"""Bearer tokens and scopes on every route of the app `clicktune serve` builds (build_app, with
an in-memory OpenSearch and no Kafka): each route x (no token, wrong token, the right one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from pydantic import SecretStr

from clicktune.cli.serve import build_app
from clicktune.config import Settings
from serving.api.app import create_app
from serving.api.auth import Authenticator, Scope
from serving.config import EncoderSettings, HotSwapSettings, ServingSettings
from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import ServingError
from serving.state.query_log import InMemoryQueryLog
from tests.unit.serving.task_fakes import FakeOpenSearch
from tests.unit.serving.test_app import MemoryIndex

TOKENS = {Scope.ADMIN: "t-admin", Scope.WRITE: "t-write", Scope.READ: "t-read"}
TASK = "/api/v1/fine-tuning/task"
# Every operation of the served app and the scope it needs. A route added to `clicktune serve`
# fails test_every_route_is_classified until it is listed here.
ROUTES = {
    ("POST", "/v1/embeddings"): Scope.READ,
    ("POST", "/embed"): Scope.READ,
    ("POST", "/v1/search"): Scope.READ,
    ("GET", "/v1/models"): Scope.READ,
    ("GET", "/healthz"): Scope.PUBLIC,
    ("GET", "/readyz"): Scope.PUBLIC,
    ("POST", "/v1/queries"): Scope.PUBLIC,  # the collector: browsers post without a token
    ("POST", "/v1/events"): Scope.PUBLIC,
    ("GET", "/dashboard"): Scope.PUBLIC,
    ("GET", "/dashboard/data"): Scope.PUBLIC,
    ("POST", "/v1/documents"): Scope.WRITE,
    ("DELETE", "/v1/documents/{doc_id}"): Scope.WRITE,
    ("POST", TASK): Scope.WRITE,
    ("GET", TASK): Scope.READ,
    ("GET", TASK + "/{task_id}"): Scope.READ,
    ("PUT", TASK + "/{task_id}/cancel"): Scope.WRITE,
    ("POST", TASK + "/{task_id}/cancel"): Scope.WRITE,
    ("GET", "/admin/models"): Scope.ADMIN,
    ("POST", "/admin/models/promote"): Scope.ADMIN,
    ("POST", "/admin/models/rollback"): Scope.ADMIN,
}
STATE_CHANGING = {op: scope for op, scope in ROUTES.items() if scope >= Scope.WRITE}


def served_app(tmp_path: Path, protect_reads: bool = False, tokens: bool = True) -> TestClient:
    serving = ServingSettings(
        hot_swap=HotSwapSettings(listen_control=False, poll_s=0),
        encoder=EncoderSettings(batch_window_ms=0),
    )
    settings = Settings(home=tmp_path, serving=serving)
    secret = SecretStr if tokens else lambda _: None  # set here: the environment cannot interfere
    settings.admin.token = secret(TOKENS[Scope.ADMIN])
    settings.auth.write_token = secret(TOKENS[Scope.WRITE])
    settings.auth.read_token = secret(TOKENS[Scope.READ])
    settings.auth.protect_reads = protect_reads
    app, _ = build_app(settings, HashingEncoder(16, "v1"), FakeOpenSearch(), object(), "production")
    return TestClient(app, raise_server_exceptions=False)


def call(client: TestClient, op: tuple[str, str], token: str | None) -> Any:
    method, path = op
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] | None = None if method in ("GET", "DELETE") else {}
    url = path.replace("{", "").replace("}", "")  # /v1/documents/doc_id: any id will do
    return client.request(method, url, headers=headers, json=body)


def refused(answer: Any) -> bool:
    return answer.status_code in (401, 403) or "auth_not_configured" in answer.text


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return served_app(tmp_path_factory.mktemp("serve"))


def test_every_route_is_classified(client: TestClient) -> None:
    schema = client.app.openapi()  # type: ignore[attr-defined]
    served = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
    assert served == set(ROUTES)


@pytest.mark.parametrize("op", sorted(STATE_CHANGING), ids=" ".join)
def test_state_changing_routes_need_a_token_of_their_scope(client: TestClient, op) -> None:
    for token, status in [(None, 401), ("t-nope", 401)]:
        answer = call(client, op, token)
        assert answer.status_code == status, (token, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["error"]["type"] == "unauthorized"
    lesser = call(client, op, TOKENS[Scope(ROUTES[op] - 1)])
    assert lesser.status_code == 403 and "needs" in lesser.json()["error"]["message"]
    for scope in Scope:
        if scope >= ROUTES[op]:
            assert not refused(call(client, op, TOKENS[scope])), scope


@pytest.mark.parametrize("op", sorted(set(ROUTES) - set(STATE_CHANGING)), ids=" ".join)
def test_public_and_read_routes_are_open_by_default(client: TestClient, op) -> None:
    for token in (None, "t-nope", TOKENS[Scope.READ]):
        assert not refused(call(client, op, token)), token


def test_protect_reads_closes_the_read_routes_only(tmp_path: Path) -> None:
    client = served_app(tmp_path, protect_reads=True)
    for op, scope in ROUTES.items():
        if scope == Scope.PUBLIC:
            assert not refused(call(client, op, None)), op
        elif scope == Scope.READ:
            assert call(client, op, None).status_code == 401, op
            assert call(client, op, "t-nope").status_code == 401, op
            assert not refused(call(client, op, TOKENS[Scope.READ])), op


def test_without_tokens_state_changing_routes_say_how_to_set_one(tmp_path: Path) -> None:
    client = served_app(tmp_path, tokens=False)
    for op in STATE_CHANGING:
        answer = call(client, op, "anything")
        assert answer.status_code == 503, op
        assert "set CLICKTUNE_ADMIN__TOKEN" in answer.json()["error"]["message"]
    assert not refused(call(client, ("POST", "/v1/events"), None))
    assert not refused(call(client, ("POST", "/v1/embeddings"), None))


def test_a_write_token_names_its_own_variable_when_missing() -> None:
    only_admin = Authenticator({Scope.ADMIN: None})
    with pytest.raises(Exception, match="CLICKTUNE_AUTH__WRITE_TOKEN") as refused_:
        only_admin.check(Scope.WRITE, "Bearer x")
    assert refused_.value.status == 503  # type: ignore[attr-defined]


def test_tokens_grant_their_scope_and_those_below() -> None:
    auth = Authenticator(TOKENS)
    assert [auth.scope_of(TOKENS[s]) for s in TOKENS] == list(TOKENS)
    assert auth.scope_of("t-admin ") is None and auth.scope_of("") is None


def test_an_app_refuses_a_route_that_declares_no_scope() -> None:
    router = APIRouter()

    @router.post("/v1/new-thing")
    def new_thing() -> None:
        pass

    encoder = HashingEncoder(16, "v1")
    with pytest.raises(ServingError, match="POST /v1/new-thing"):
        create_app(
            ModelSlot(encoder),
            MemoryIndex(encoder),
            InMemoryQueryLog(),
            ServingSettings(),
            routers=[router],
        )
