"""How clicktune's indexes sit on an OpenSearch cluster: shards, replicas and ISM rollover.

Replicas are a count (`1`) or an auto-expand range (`"0-1"`: one copy per other data node, up to
1). The range is the default: a one-node cluster stays green with no replica to place, and a
second data node gets a copy of every shard without a setting changed.

Rollover (off by default) needs OpenSearch's Index State Management plugin: writes then go to an
alias `<index>` whose write index is `<index>-000001`, `-000002`, ...; searches of `<index>` read
them all. `ingest.templates` installs the policy and the first backing index.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, model_validator

__all__ = [
    "Replicas",
    "RolloverSettings",
    "UbiIndexSettings",
    "create_internal_index",
    "replica_settings",
]

AUTO_EXPAND = re.compile(r"(\d+)-(\d+|all)")
BYTE_SIZE = r"^\d+(b|kb|mb|gb|tb|pb)$"
DURATION = r"^\d+(ms|s|m|h|d)$"


def _replicas(value: Any) -> int | str:
    """A replica count, or an auto-expand range "low-high" / "low-all"; digits become a count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        match = AUTO_EXPAND.fullmatch(text)
        if match and (match[2] == "all" or int(match[1]) <= int(match[2])):
            return text
    raise ValueError(
        f"replicas {value!r} must be a count (0, 1, ...) or an auto-expand range low-high "
        "with low <= high, such as '0-1' or '0-all'"
    )


Replicas = Annotated[int | str, BeforeValidator(_replicas)]


def replica_settings(replicas: int | str) -> dict[str, Any]:
    """The index settings that give an index `replicas` (a count or an auto-expand range)."""
    if isinstance(replicas, int):
        return {"number_of_replicas": replicas}
    return {"auto_expand_replicas": replicas}


def create_internal_index(
    client: Any, index: str, replicas: int | str, mappings: dict[str, Any] | None = None
) -> None:
    """Create one of clicktune's own indexes (tasks, lease, state, arm health) with `replicas`
    unless it exists; another process creating it meanwhile is not an error. OpenSearch's own
    exceptions reach the caller, which names what the index is for."""
    if client.indices.exists(index=index):
        return
    body: dict[str, Any] = {"settings": replica_settings(replicas)}
    if mappings is not None:
        body["mappings"] = mappings
    client.indices.create(index=index, body=body, params={"ignore": 400})  # 400: created meanwhile


class RolloverSettings(BaseModel):
    """ISM rollover of a UBI index: a new backing index once any condition holds."""

    enabled: bool = False
    min_primary_shard_size: str | None = Field(default="30gb", pattern=BYTE_SIZE)
    min_index_age: str | None = Field(default="7d", pattern=DURATION)
    min_doc_count: int | None = Field(default=None, ge=1)
    delete_after: str | None = Field(
        default=None,
        pattern=DURATION,
        description="delete a backing index this long after it was created; None: keep",
    )

    @model_validator(mode="after")
    def _one_condition(self) -> RolloverSettings:
        if self.enabled and not self.conditions():
            raise ValueError(
                "ingest.index.rollover is enabled with no condition: set min_primary_shard_size, "
                "min_index_age or min_doc_count"
            )
        return self

    def conditions(self) -> dict[str, Any]:
        """The ISM rollover action's conditions (any one rolls the index over)."""
        found = {
            "min_primary_shard_size": self.min_primary_shard_size,
            "min_index_age": self.min_index_age,
            "min_doc_count": self.min_doc_count,
        }
        return {name: value for name, value in found.items() if value is not None}


class UbiIndexSettings(BaseModel):
    """Shards, replicas and rollover of the UBI query and event indexes (their templates)."""

    shards: int = Field(default=1, ge=1, le=1024)
    replicas: Replicas = "0-1"
    rollover: RolloverSettings = Field(default_factory=RolloverSettings)

    def index_settings(self) -> dict[str, Any]:
        """The `settings` of the index templates."""
        return {"number_of_shards": self.shards, **replica_settings(self.replicas)}
