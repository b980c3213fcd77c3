"""Index templates for the UBI indexes, following the mappings of OpenSearch's UBI plugin.

Ids are keywords, timestamps dates, `user_query` text with a keyword sub-field; free-form
attributes map their strings to keywords so that an unexpected field never becomes full text.
"""

from __future__ import annotations

from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import TransportError

from ingest.writer import store_error

__all__ = ["events_template", "install_templates", "queries_template", "template_name"]

TEMPLATE_PRIORITY = 100
KEYWORD = {"type": "keyword", "ignore_above": 1024}
DATE = {"type": "date", "format": "strict_date_optional_time||epoch_millis"}
_STRINGS_AS_KEYWORDS = [
    {"strings_as_keywords": {"match_mapping_type": "string", "mapping": KEYWORD}},
]


def template_name(index: str) -> str:
    return f"clicktune-{index}"


def queries_template(index: str) -> dict[str, Any]:
    """The template body for the UBI query index `index`."""
    properties = {
        "query_id": KEYWORD,
        "timestamp": DATE,
        "client_id": KEYWORD,
        "user_query": {"type": "text", "fields": {"keyword": {**KEYWORD, "ignore_above": 256}}},
        "query_response_id": KEYWORD,
        "query_response_hit_ids": KEYWORD,
        "application": KEYWORD,
        "query_attributes": {"type": "object", "dynamic": True},
    }
    return _template(index, properties)


def events_template(index: str) -> dict[str, Any]:
    """The template body for the UBI event index `index`."""
    properties = {
        "action_name": KEYWORD,
        "query_id": KEYWORD,
        "client_id": KEYWORD,
        "application": KEYWORD,
        "timestamp": DATE,
        "message_type": KEYWORD,
        "message": {"type": "text"},
        "event_attributes": {
            "type": "object",
            "dynamic": True,
            "properties": {
                "event_id": KEYWORD,
                "session_id": KEYWORD,
                "object": {
                    "type": "object",
                    "properties": {
                        "object_id": KEYWORD,
                        "object_id_field": KEYWORD,
                        "description": {"type": "text"},
                    },
                },
                "position": {
                    "type": "object",
                    "properties": {
                        "ordinal": {"type": "integer"},
                        "x": {"type": "integer"},
                        "y": {"type": "integer"},
                        "page_depth": {"type": "integer"},
                        "scroll_depth": {"type": "integer"},
                    },
                },
            },
        },
    }
    return _template(index, properties)


def _template(index: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "index_patterns": [index],
        "priority": TEMPLATE_PRIORITY,
        "template": {
            "mappings": {"dynamic_templates": _STRINGS_AS_KEYWORDS, "properties": properties},
        },
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
