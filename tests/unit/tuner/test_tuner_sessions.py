from __future__ import annotations

from datetime import UTC, datetime

from tuner.sessions import Action, join_sessions


def query(qid: str, text: str, hits: list[str], ts: str) -> dict:
    return {"query_id": qid, "user_query": text, "query_response_hit_ids": hits, "timestamp": ts}


def event(eid: str, qid: str, obj: str, name: str = "click", ordinal: int | None = 0) -> dict:
    return {
        "query_id": qid,
        "action_name": name,
        "timestamp": "2026-01-01T00:00:05Z",
        "event_attributes": {
            "event_id": eid,
            "object": {"object_id": obj, "object_id_field": "_id"},
            "position": {"ordinal": ordinal},
        },
    }


def test_events_join_their_query_and_duplicates_count_once() -> None:
    queries = [
        query("q2", "saw", ["c"], "2026-01-01T00:01:00Z"),
        query("q1", "drill", ["a", "b"], "2026-01-01T00:00:00Z"),
    ]
    events = [
        event("e1", "q1", "b", ordinal=1),
        event("e1", "q1", "b", ordinal=1),  # redelivered
        event("e2", "q1", "b", "purchase", 1),
        event("e3", "q-unknown", "x"),
    ]
    first, second = join_sessions(queries, events)
    assert first.query_id == "q1"  # timestamp order
    assert first.timestamp == datetime(2026, 1, 1, tzinfo=UTC)
    assert first.hit_ids == ("a", "b")
    assert first.actions == (Action("b", "click", 1), Action("b", "purchase", 1))
    assert second.actions == ()


def test_records_missing_what_a_session_needs_are_skipped() -> None:
    queries = [{"query_id": "q1"}, query("q2", "drill", [], "not a date")]
    events = [{"query_id": "q2", "action_name": "click", "event_attributes": {}}]
    [only] = join_sessions(queries, events)
    assert (only.query_id, only.timestamp, only.actions) == ("q2", None, ())


def test_a_sessions_actions_come_in_time_order_whatever_order_they_were_read_in() -> None:
    queries = [query("q1", "drill", ["a", "b", "c"], "2026-01-01T00:00:00Z")]
    late, early, undated = (
        {**event("e1", "q1", "c", ordinal=2), "timestamp": "2026-01-01T00:00:09Z"},
        {**event("e2", "q1", "a", ordinal=0), "timestamp": "2026-01-01T00:00:03+00:00"},
        {**event("e3", "q1", "b", ordinal=1), "timestamp": None},
    )
    for read in ([late, early, undated], [undated, early, late], [early, undated, late]):
        [only] = join_sessions(queries, read)
        assert [a.object_id for a in only.actions] == ["a", "c", "b"]


def test_spec_valid_records_training_cannot_use_are_skipped_and_counted() -> None:
    from collections import Counter

    queries = [
        {**query("q1", "drill", ["a", "b"], "2026-01-01T00:00:00Z"), "application": "shop"},
        {"user_query": "no id", "timestamp": "2026-01-01T00:00:00Z"},
    ]
    page_exit = {  # the UBI spec's own sample: no client, no object id, an empty position
        "action_name": "page_exit",
        "query_id": "q1",
        "timestamp": "2026-01-01T00:00:05Z",
        "event_attributes": {"position": {}, "object": {"idleTimeoutMs": 5000}},
    }
    no_query = {**event("e2", "q1", "a"), "query_id": None}
    integer_id = event("e3", "q1", "b")
    integer_id["event_attributes"]["object"]["object_id"] = 7
    skipped: Counter[str] = Counter()
    (session,) = join_sessions(queries, [page_exit, no_query, integer_id], skipped)
    assert session.actions == (Action("7", "click", 0),)
    assert session.application == "shop"
    assert skipped == {
        "event without an object id": 1,
        "event without a query_id": 1,
        "query without a query_id or user_query": 1,
    }


def test_a_shuffled_search_carries_its_explored_depth() -> None:
    shuffled = {
        **query("q1", "drill", ["a", "b"], "2026-01-01T00:00:00Z"),
        "query_attributes": {"randomized": "shuffle_top_20"},
    }
    plain = query("q2", "saw", ["c"], "2026-01-01T00:00:01Z")
    first, second = join_sessions([shuffled, plain], [])
    assert (first.randomized, first.explored_depth) == (True, 20)
    assert (second.randomized, second.explored_depth) == (False, None)
