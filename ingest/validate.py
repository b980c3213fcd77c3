"""Bytes from Kafka -> a UBI record, or a `Rejection` whose reason names the field and the rule.

Validation never raises on bad input: whatever arrives, the caller gets a record to store or a
reason to put on the dead-letter topic.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from pydantic import ValidationError

from ingest.ids import canonical_json
from ingest.schema import UbiEvent, UbiQuery

__all__ = ["RecordKind", "Rejection", "UbiRecord", "describe_errors", "validate_record"]

UbiRecord = UbiQuery | UbiEvent
MAX_REASONS = 3
_LONG_NUMBER = re.compile(rb"\d{19}")


class RecordKind(StrEnum):
    QUERY = "query"
    EVENT = "event"


@dataclass(frozen=True)
class Rejection:
    """Why a record was refused, e.g. 'event_attributes.position.ordinal: -1 is below 0'."""

    reason: str


_MODELS: dict[RecordKind, type[UbiQuery] | type[UbiEvent]] = {
    RecordKind.QUERY: UbiQuery,
    RecordKind.EVENT: UbiEvent,
}


def validate_record(
    raw: bytes | None, kind: RecordKind, max_record_bytes: int
) -> UbiRecord | Rejection:
    """Parse and check one Kafka record value of `kind`."""
    if raw is None or len(raw) == 0:
        return Rejection("empty record (no value)")
    if len(raw) > max_record_bytes:
        return Rejection(f"record of {len(raw)} bytes is over max_record_bytes={max_record_bytes}")
    data = _parse_json(raw)
    if isinstance(data, Rejection):
        return data
    if not isinstance(data, dict):
        return Rejection(f"not a JSON object: got a JSON {type(data).__name__}")
    try:
        record = _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        return Rejection(describe_errors(exc))
    return record


def _parse_json(raw: bytes) -> Any:
    """orjson when it surely agrees with the stdlib (most records), else the stdlib's parse."""
    if not _LONG_NUMBER.search(raw):  # orjson turns integers over 64 bits into floats
        try:
            return orjson.loads(raw)  # refuses NaN, Infinity, lone surrogates, bad UTF-8
        except orjson.JSONDecodeError:
            pass  # parsed again below, for the stdlib's wording of the reason
    try:
        data = json.loads(
            raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
        )
        # Lone surrogates ("\ud800") parse but cannot be sent to OpenSearch as UTF-8; they can
        # only come from \u escapes, so most records skip the (costly) re-encoding check.
        if b"\\u" in raw:
            canonical_json(data).encode("utf-8")
    except UnicodeError as exc:
        return Rejection(f"not UTF-8 text: {exc}")
    except RecursionError:
        return Rejection("not JSON: nested too deeply")
    except ValueError as exc:
        return Rejection(f"not JSON: {exc}")
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the float range")
    return value


def describe_errors(exc: ValidationError) -> str:
    """The first few pydantic errors as 'field.path: value rule' phrases joined by '; '."""
    errors = exc.errors(include_url=False)
    phrases = [_describe(error) for error in errors[:MAX_REASONS]]
    if len(errors) > MAX_REASONS:
        phrases.append(f"and {len(errors) - MAX_REASONS} more")
    return "; ".join(phrases)


def _describe(error: Any) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "record"
    value, kind, ctx = error.get("input"), error["type"], error.get("ctx") or {}
    shown = _short(value)
    if kind == "missing":
        return f"{field}: is required but missing"
    if kind == "greater_than_equal":
        return f"{field}: {shown} is below {ctx['ge']}"
    if kind == "less_than_equal":
        return f"{field}: {shown} is above {ctx['le']}"
    if kind == "value_error":
        return f"{field}: {ctx.get('error', error['msg'])}"
    return f"{field}: {shown} is invalid ({error['msg'].lower()})"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
