"""The tuner against the real OpenSearch: sessions from the UBI indexes, and `clicktune train`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from ingest.config import IngestSettings
from ingest.templates import install_templates, template_name
from tuner.sessions import Action, read_sessions

pytestmark = pytest.mark.integration

QUERIES = [
    ("q1", "cordless drill", ["d1", "d2", "d3"], "2026-03-01T10:00:00Z"),
    ("q2", "garden hose", ["d4", "d5"], "2026-03-02T10:00:00Z"),
    ("q3", "cordless drill", ["d2", "d1"], "2026-03-03T10:00:00Z"),
]
EVENTS = [  # (event id, query id, object, action, ordinal)
    ("e1", "q1", "d3", "click", 2),
    ("e2", "q1", "d3", "add_to_cart", 2),
    ("e3", "q2", "d5", "click", 1),
    ("e4", "q3", "d1", "purchase", 1),
    ("e5", "q-gone", "d9", "click", 0),
]
DOCS = {
    "d1": ("DEWALT 20V MAX Cordless Drill", "Compact drill driver kit with two batteries."),
    "d2": ("Drill Bit Set", "29-piece titanium drill bits."),
    "d3": ("Makita 18V Cordless Drill", "Brushless hammer drill, tool only."),
    "d4": ("Flexible Garden Hose 50 ft", "Kink-free expandable hose."),
    "d5": ("Hose Reel Cart", "Holds 200 ft of garden hose."),
}


@pytest.fixture()
def ubi(opensearch, unique):  # type: ignore[no-untyped-def]
    """Unique UBI indexes holding QUERIES and EVENTS, with the ingest mappings."""
    settings = IngestSettings(
        queries_index=f"ubi_queries_{unique}", events_index=f"ubi_events_{unique}"
    )
    install_templates(opensearch, settings.queries_index, settings.events_index)
    for qid, text, hits, ts in QUERIES:
        body = {
            "query_id": qid,
            "user_query": text,
            "query_response_hit_ids": hits,
            "timestamp": ts,
            "client_id": "c1",
            "application": "test",
        }
        opensearch.index(index=settings.queries_index, id=qid, body=body)
    for eid, qid, obj, action, ordinal in EVENTS:
        body = {
            "action_name": action,
            "query_id": qid,
            "client_id": "c1",
            "timestamp": "2026-03-03T11:00:00Z",
            "event_attributes": {
                "event_id": eid,
                "session_id": "s1",
                "object": {"object_id": obj, "object_id_field": "_id"},
                "position": {"ordinal": ordinal},
            },
        }
        opensearch.index(index=settings.events_index, id=eid, body=body)
    opensearch.indices.refresh(index=f"{settings.queries_index},{settings.events_index}")
    yield settings
    opensearch.indices.delete(
        index=f"{settings.queries_index},{settings.events_index}", ignore_unavailable=True
    )
    for index in (settings.queries_index, settings.events_index):
        opensearch.indices.delete_index_template(name=template_name(index), ignore=[404])


def test_read_sessions_joins_events_to_their_queries(opensearch, ubi) -> None:  # type: ignore[no-untyped-def]
    sessions = read_sessions(opensearch, ubi)
    assert [s.query_id for s in sessions] == ["q1", "q2", "q3"]
    q1 = sessions[0]
    assert (q1.user_query, q1.hit_ids) == ("cordless drill", ("d1", "d2", "d3"))
    assert sorted(q1.actions) == [Action("d3", "add_to_cart", 2), Action("d3", "click", 2)]
    assert sessions[2].actions == (Action("d1", "purchase", 1),)
    assert sessions[0].timestamp == datetime(2026, 3, 1, 10, tzinfo=UTC)


def test_read_sessions_since_keeps_the_later_queries(opensearch, ubi) -> None:  # type: ignore[no-untyped-def]
    sessions = read_sessions(opensearch, ubi, since=datetime(2026, 3, 2, tzinfo=UTC))
    assert [s.query_id for s in sessions] == ["q2", "q3"]


def test_a_missing_query_index_is_a_clear_error(opensearch, unique) -> None:  # type: ignore[no-untyped-def]
    from tuner.errors import SessionStoreError

    settings = IngestSettings(
        queries_index=f"ubi_none_{unique}", events_index=f"ubi_none_e_{unique}"
    )
    with pytest.raises(SessionStoreError, match=f"ubi_none_{unique}"):
        read_sessions(opensearch, settings)


@pytest.mark.slow
def test_train_registers_a_new_version_from_the_sessions(  # type: ignore[no-untyped-def]
    opensearch, ubi, unique, tmp_home, monkeypatch
) -> None:
    from clicktune.cli import app

    alias, index = f"docs_{unique}", f"docs_{unique}__base__1"
    opensearch.indices.create(index=index, body={"aliases": {alias: {}}})
    for doc_id, (title, text) in DOCS.items():
        opensearch.index(index=index, id=doc_id, body={"title": title, "text": text})
    opensearch.indices.refresh(index=index)
    monkeypatch.setenv("CLICKTUNE_INGEST__QUERIES_INDEX", ubi.queries_index)
    monkeypatch.setenv("CLICKTUNE_INGEST__EVENTS_INDEX", ubi.events_index)
    monkeypatch.setenv("CLICKTUNE_SERVING__INDEX__ALIAS", alias)
    monkeypatch.setenv("CLICKTUNE_TUNER__GATE__ENABLED", "false")  # 3 sessions validate nothing
    runner = CliRunner()
    try:
        imported = runner.invoke(app, ["models", "import", "--json"])
        assert imported.exit_code == 0, imported.output
        assert json.loads(imported.stdout)["status"] == "imported"
        again = runner.invoke(app, ["models", "import", "--json"])
        assert json.loads(again.stdout)["status"] == "exists"

        trained = runner.invoke(app, ["train", "--max-steps", "2", "--promote", "--json"])
        assert trained.exit_code == 0, trained.output
        result = json.loads(trained.stdout)
        assert result["status"] == "done" and result["version"] == "v1"
        assert (result["sessions"], result["pairs"], result["steps"]) == (3, 3, 2)
        assert result["batch_id"] == "batch-0001"
        assert (tmp_home / "batches" / "batch-0001.json").is_file()

        again = runner.invoke(app, ["train", "--now", "--json"])
        assert again.exit_code == 1 and "no sessions to train on" in again.output

        listed = json.loads(runner.invoke(app, ["models", "list", "--json"]).stdout)
        by_version = {v["version"]: v for v in listed["versions"]}
        assert by_version["v1"]["parent"] == "base" and by_version["v1"]["aliases"] == [
            "candidate",
            "production",
        ]
        assert (tmp_home / "models" / "versions" / "v1" / "st").is_dir()
        assert by_version["v1"]["mlflow"]["batch_id"] == "batch-0001"
        assert by_version["v1"]["mlflow"]["mlflow_aliases"] == ["candidate", "production"]
    finally:
        opensearch.indices.delete(index=index, ignore_unavailable=True)


def test_train_without_sessions_says_so(opensearch, unique, tmp_home, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from clicktune.cli import app

    monkeypatch.setenv("CLICKTUNE_INGEST__QUERIES_INDEX", f"ubi_empty_{unique}")
    opensearch.indices.create(index=f"ubi_empty_{unique}")
    try:
        result = CliRunner().invoke(app, ["train", "--json"])
    finally:
        opensearch.indices.delete(index=f"ubi_empty_{unique}")
    assert result.exit_code == 1
    assert "no sessions to train on" in result.output
