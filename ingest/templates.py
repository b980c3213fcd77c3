"""Index templates for the UBI indexes, after the mappings of OpenSearch's UBI plugin.

UBI lets every record carry fields of its own (`additionalProperties: true` throughout), and two
valid records may give the same unknown field a string and an object. A dynamic mapping would
refuse the second, so a spec-valid record would be lost. Hence:

- the fields of the UBI 1.3.0 schemas, and what clicktune searches on, are mapped explicitly
  with the types that validation (`ingest.schema`) enforces: ids and names as keywords (an
  integer `object_id` is found as the string "7"), `timestamp` a date, `user_query` text with a
  keyword sub-field, numbers with `ignore_malformed` (UBI's integers have no range);
- everything else is kept in `_source`, returned as sent, and not indexed (`dynamic: false`).
  To search one of your own attributes, add it to these templates.
"""

from __future__ import annotations

from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import TransportError

from ingest.writer import store_error

__all__ = ["events_template", "install_templates", "queries_template", "template_name"]

TEMPLATE_PRIORITY = 100
KEYWORD = {"type": "keyword", "ignore_above": 1024}
ID = {"type": "keyword", "ignore_above": 512}
TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
DATE = {
    "type": "date",
    "format": "strict_date_optional_time||epoch_millis",
    "ignore_malformed": True,
}
INTEGER = {"type": "integer", "ignore_malformed": True}
NUMBER = {"type": "double", "ignore_malformed": True}


def template_name(index: str) -> str:
    return f"clicktune-{index}"


def queries_template(index: str) -> dict[str, Any]:
    """The template body for the UBI query index `index`."""
    properties = {
        "query_id": ID,
        "timestamp": DATE,
        "client_id": KEYWORD,
        "user_query": TEXT,
        "query": {"type": "text"},  # the engine's query, as the UBI plugin stores it
        "query_response_id": ID,
        "query_response_hit_ids": ID,
        "application": KEYWORD,
        "object_id_field": KEYWORD,
        # A/B statistics select an experiment's queries (serving/ab_stats.py).
        "query_attributes": _unindexed({"experiment": KEYWORD}),
    }
    return _template(index, properties)


def events_template(index: str) -> dict[str, Any]:
    """The template body for the UBI event index `index`."""
    properties = {
        "action_name": KEYWORD,
        "query_id": ID,
        "session_id": KEYWORD,
        "client_id": KEYWORD,
        "user_id": KEYWORD,
        "application": KEYWORD,
        "timestamp": DATE,
        "message_type": KEYWORD,
        "message": {"type": "text"},
        "user_query": TEXT,
        "event_attributes": _unindexed(
            {
                "object": _unindexed(
                    {
                        "object_id": ID,
                        "internal_id": ID,
                        "object_id_field": KEYWORD,
                        "object_id_type": KEYWORD,
                    }
                ),
                "position": _unindexed(
                    {"ordinal": INTEGER, "xy": _unindexed({"x": NUMBER, "y": NUMBER})}
                ),
            }
        ),
    }
    return _template(index, properties)


def _unindexed(properties: dict[str, Any]) -> dict[str, Any]:
    """An object whose `properties` are mapped and whose other fields are only stored."""
    return {"type": "object", "dynamic": False, "properties": properties}


def _template(index: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "index_patterns": [index],
        "priority": TEMPLATE_PRIORITY,
        "template": {"mappings": {"dynamic": False, "properties": properties}},
        "_meta": {"managed_by": "clicktune.ingest"},
    }


def install_templates(client: OpenSearch, queries_index: str, events_index: str) -> None:
    """Create or replace both templates (idempotent: running it twice changes nothing)."""
    for index, body in (
        (queries_index, queries_template(queries_index)),
        (events_index, events_template(events_index)),
    ):
        try:
            client.indices.put_index_template(name=template_name(index), body=body)
        except TransportError as exc:
            raise store_error(exc, f"the index template for {index!r}") from exc
