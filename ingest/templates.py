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

Shards and replicas come from `ingest.index` (`ingest.index_layout`). With rollover on, the
templates match the backing indexes `<index>-*`, an ISM policy rolls them over, and the first one
is created behind the write alias `<index>`; the cluster must have the ISM plugin.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy.exceptions import NotFoundError, TransportError

from ingest.errors import SetupError
from ingest.index_layout import UbiIndexSettings
from ingest.writer import store_error

__all__ = [
    "events_template",
    "install_templates",
    "policy_id",
    "queries_template",
    "rollover_policy",
    "template_name",
]

TEMPLATE_PRIORITY = 100
ISM_PLUGIN = "opensearch-index-management"
FIRST_BACKING = "000001"
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


def policy_id(index: str) -> str:
    return f"clicktune-{index}-rollover"


def queries_template(index: str, layout: UbiIndexSettings | None = None) -> dict[str, Any]:
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
        # A/B statistics select an experiment's queries (serving/rollout/ab_stats.py).
        "query_attributes": _unindexed({"experiment": KEYWORD}),
    }
    return _template(index, properties, layout or UbiIndexSettings())


def events_template(index: str, layout: UbiIndexSettings | None = None) -> dict[str, Any]:
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
    return _template(index, properties, layout or UbiIndexSettings())


def _unindexed(properties: dict[str, Any]) -> dict[str, Any]:
    """An object whose `properties` are mapped and whose other fields are only stored."""
    return {"type": "object", "dynamic": False, "properties": properties}


def _template(index: str, properties: dict[str, Any], layout: UbiIndexSettings) -> dict[str, Any]:
    settings = layout.index_settings()
    patterns = [index]
    if layout.rollover.enabled:
        patterns = [f"{index}-*"]
        settings["plugins.index_state_management.rollover_alias"] = index
    return {
        "index_patterns": patterns,
        "priority": TEMPLATE_PRIORITY,
        "template": {
            "settings": settings,
            "mappings": {"dynamic": False, "properties": properties},
        },
        "_meta": {"managed_by": "clicktune.ingest"},
    }


def rollover_policy(index: str, layout: UbiIndexSettings) -> dict[str, Any]:
    """The ISM policy of `index`'s backing indexes: roll over, then delete if configured."""
    rollover = layout.rollover
    hot: dict[str, Any] = {
        "name": "hot",
        "actions": [{"rollover": rollover.conditions()}],
        "transitions": [],
    }
    states = [hot]
    if rollover.delete_after is not None:
        hot["transitions"] = [
            {"state_name": "delete", "conditions": {"min_index_age": rollover.delete_after}}
        ]
        states.append({"name": "delete", "actions": [{"delete": {}}], "transitions": []})
    policy: dict[str, Any] = {
        "default_state": "hot",
        "states": states,
        "ism_template": [{"index_patterns": [f"{index}-*"], "priority": TEMPLATE_PRIORITY}],
    }
    # ISM answers a stored policy with its defaults filled in; the digest tells ours apart.
    digest = hashlib.sha256(json.dumps(policy, sort_keys=True).encode()).hexdigest()[:12]
    policy["description"] = f"clicktune: rollover of the UBI index {index} ({digest})"
    return {"policy": policy}


def install_templates(
    client: OpenSearch,
    queries_index: str,
    events_index: str,
    layout: UbiIndexSettings | None = None,
) -> None:
    """Create or replace both templates (idempotent: running it twice changes nothing).

    With rollover on, also the ISM policies and each index's first backing index."""
    layout = layout or UbiIndexSettings()
    if layout.rollover.enabled:
        _require_ism(client)
    for index, body in (
        (queries_index, queries_template(queries_index, layout)),
        (events_index, events_template(events_index, layout)),
    ):
        try:
            if layout.rollover.enabled:
                _put_policy(client, index, rollover_policy(index, layout))
            client.indices.put_index_template(name=template_name(index), body=body)
            if layout.rollover.enabled:
                _bootstrap(client, index)
        except TransportError as exc:
            raise store_error(exc, f"the index template for {index!r}") from exc


def _require_ism(client: OpenSearch) -> None:
    try:
        rows = client.cat.plugins(format="json")
    except TransportError as exc:
        raise store_error(exc, "the plugin list") from exc
    if not any(row.get("component") == ISM_PLUGIN for row in rows):
        raise SetupError(
            "ingest.index.rollover.enabled is true, but the OpenSearch cluster has no "
            f"{ISM_PLUGIN} plugin (Index State Management); install it (the full OpenSearch "
            "distribution ships it) or set ingest.index.rollover.enabled to false"
        )


def _put_policy(client: OpenSearch, index: str, body: dict[str, Any]) -> None:
    """Create the policy, or update it (ISM wants the stored seq_no) when its digest differs."""
    path = f"/_plugins/_ism/policies/{policy_id(index)}"
    try:
        stored = client.transport.perform_request("GET", path)
    except NotFoundError:
        client.transport.perform_request("PUT", path, body=body)
        return
    if stored.get("policy", {}).get("description") == body["policy"]["description"]:
        return
    params = {"if_seq_no": stored["_seq_no"], "if_primary_term": stored["_primary_term"]}
    client.transport.perform_request("PUT", path, params=params, body=body)


def _bootstrap(client: OpenSearch, index: str) -> None:
    """Create `<index>-000001` behind the write alias `index`, unless the alias exists."""
    if client.indices.exists_alias(name=index):
        return
    if client.indices.exists(index=index):
        raise SetupError(
            f"ingest.index.rollover needs {index!r} to be an alias, but an index of that name "
            f"exists; reindex it into {index}-{FIRST_BACKING} behind the alias {index!r}, or set "
            "ingest.index.rollover.enabled to false"
        )
    body = {"aliases": {index: {"is_write_index": True}}}
    # ignore 400: another worker created it meanwhile
    client.indices.create(index=f"{index}-{FIRST_BACKING}", body=body, params={"ignore": 400})
