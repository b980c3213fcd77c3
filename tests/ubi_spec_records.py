"""Records valid under the published UBI 1.3.0 JSON schemas, generated from the schemas.

`spec_records(kind)` walks the schema (objects, strings with `maxLength`/`enum`/`format`,
integers, numbers, arrays, `anyOf`/`oneOf`, `additionalProperties: true`) into a hypothesis
strategy, and keeps only what `jsonschema` (draft 2020-12, formats asserted) calls valid, so a
generated record is spec-valid by the spec's own validator, not by our reading of it. Extra
properties get arbitrary JSON values, as `additionalProperties: true` allows. The schema files
and the spec's samples are in `tests/ubi_spec/` (see its SOURCE.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

__all__ = [
    "SAMPLES",
    "json_values",
    "rfc3339_times",
    "sample",
    "schema",
    "spec_records",
    "validator",
]

SPEC = Path(__file__).parent / "ubi_spec"
SCHEMAS = {"event": "event.schema.json", "query": "query.request.schema.json"}
SAMPLES = {
    "event": ["event-opensearch.json"],
    "query": ["query-opensearch.json", "query-solr.json"],
}
MAX_EXTRA_KEYS = 3

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@cache
def schema(kind: str) -> dict[str, Any]:
    return json.loads((SPEC / SCHEMAS[kind]).read_text())


def sample(name: str) -> dict[str, Any]:
    return json.loads((SPEC / name).read_text())


@cache
def validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schema(kind), format_checker=Draft202012Validator.FORMAT_CHECKER)


def spec_records(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """Records of `kind` ("event" or "query") valid under the UBI 1.3.0 schema."""
    return strategy(schema(kind)).filter(validator(kind).is_valid)


def strategy(node: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for the JSON values one schema node admits (the subset UBI uses)."""
    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            return st.one_of([_branch(node, b, combinator) for b in node[combinator]])
    kind = node.get("type")
    if kind == "object":
        return _object(node)
    if kind == "array":
        return st.lists(strategy(node.get("items", {})), max_size=5)
    if kind == "integer":
        return st.integers()
    if kind == "number":
        return st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    if kind == "string":
        return _string(node)
    return json_values


def _branch(
    node: dict[str, Any], branch: dict[str, Any], combinator: str
) -> st.SearchStrategy[Any]:
    merged = {k: v for k, v in node.items() if k != combinator}
    merged.update(branch)
    if "properties" in node and "properties" in branch:
        merged["properties"] = {**node["properties"], **branch["properties"]}
    return strategy(merged)


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if "enum" in node:
        return st.sampled_from(node["enum"])
    if node.get("format") == "date-time":
        return rfc3339_times()
    examples = node.get("examples", [])
    text = st.text(max_size=node.get("maxLength", 40))
    return st.sampled_from(examples) | text if examples else text


def _object(node: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = node.get("properties", {})
    required = [k for k in node.get("required", []) if k in properties]
    optional = [k for k in properties if k not in required]
    fixed = st.fixed_dictionaries(
        {k: strategy(properties[k]) for k in required},
        optional={k: strategy(properties[k]) for k in optional},
    )
    if node.get("additionalProperties") is not True:
        return fixed
    extra_keys = st.text(min_size=1, max_size=10).filter(lambda k: k not in properties)
    extras = st.dictionaries(extra_keys, json_values, max_size=MAX_EXTRA_KEYS)
    return st.builds(lambda known, more: {**more, **known}, fixed, extras)


@st.composite
def rfc3339_times(draw: st.DrawFn) -> str:
    """RFC 3339 date-times: any year, fractions or none, Z / z or a numeric offset."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
    fraction = draw(st.sampled_from(["", ".5", ".123", ".123456"]))
    offset = draw(
        st.sampled_from(["Z", "z", "+00:00"]) | st.integers(-14 * 60, 14 * 60).map(_offset)
    )
    separator = draw(st.sampled_from(["T", "t"]))
    return f"{moment:%Y-%m-%d}{separator}{moment:%H:%M:%S}{fraction}{offset}"


def _offset(minutes: int) -> str:
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"
