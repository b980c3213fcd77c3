"""The one JSON shape every bench script writes with `--json PATH`, and its checks.

    {"bench": "ingest",
     "figures": {"worker": 8123.4, "raw_bulk_mean": 8790.1},
     "units": {"worker": "records/s", "raw_bulk_mean": "records/s"},
     "ratios": {"worker_over_raw_bulk": {"value": 0.92, "target": ">=0.8"}},
     "params": {"records": 100000}}

`figures` holds every number the script prints, each with its unit in `units`; `ratios` the
ratios it prints against a baseline measured in the same run. A target is ">=X" or "<=X" (a
trailing "x" is allowed: ">=2x") or null when the ratio is printed for context only. `params`
(optional) holds the sizes and settings of the run, so a quick run is never read as a full one.

`bench/run_all.py` reads the files back with `BenchResult.from_json`, which refuses a file that
breaks this shape (`BenchFormatError`, naming the bad value): a bench that drifts fails loudly
instead of losing rows. Standard library only, so bench scripts and `run_all` can import it
without the venv.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BenchFormatError", "BenchResult", "Ratio", "parse_target"]

_TARGET = re.compile(r"^\s*(>=|<=)\s*(\d+(?:\.\d+)?)\s*x?\s*$")


class BenchFormatError(ValueError):
    """A bench JSON that breaks the shape in this module's docstring."""


def parse_target(target: str) -> tuple[str, float]:
    """(">=" or "<=", bound) of a target such as ">=1.5" or "<=0.5x"."""
    match = _TARGET.match(target)
    if match is None:
        raise BenchFormatError(
            f"target {target!r} is not '>=X' or '<=X' with X a number (e.g. '>=1.5', '<=0.5')"
        )
    return match.group(1), float(match.group(2))


@dataclass(frozen=True)
class Ratio:
    """A ratio to a baseline of the same run, and the target it is held to (None: no target)."""

    value: float
    target: str | None = None

    def __post_init__(self) -> None:
        if self.target is not None:
            parse_target(self.target)  # refuse a bad target where it is written, not when read

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target; None when there is none."""
        if self.target is None:
            return None
        op, bound = parse_target(self.target)
        return self.value >= bound if op == ">=" else self.value <= bound


@dataclass
class BenchResult:
    """What one bench run measured; `add` and `add_ratio` as it prints, `write` at the end."""

    bench: str
    figures: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    ratios: dict[str, Ratio] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, value: float, unit: str) -> None:
        """Record a printed figure; a NaN or infinite value is refused, not written."""
        self.figures[name] = _number(value, f"figure {name!r} of {self.bench}")
        self.units[name] = unit

    def add_ratio(self, name: str, value: float, target: str | None = None) -> None:
        """Record a printed ratio and its target (">=0.8", "<=0.5" or None)."""
        self.ratios[name] = Ratio(_number(value, f"ratio {name!r} of {self.bench}"), target)

    def to_json(self) -> dict[str, Any]:
        return {
            "bench": self.bench,
            "figures": self.figures,
            "units": self.units,
            "ratios": {k: {"value": r.value, "target": r.target} for k, r in self.ratios.items()},
            "params": self.params,
        }

    def write(self, path: str | Path | None) -> None:
        """Write the JSON to `path` (nothing when None: `--json` was not given)."""
        if path is None:
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_json(), indent=2, default=str) + "\n")

    @classmethod
    def from_json(cls, data: Any) -> BenchResult:
        """Check `data` against the shape of the module docstring and build the result."""
        if not isinstance(data, dict) or not isinstance(data.get("bench"), str):
            raise BenchFormatError(f"bench JSON must be an object with a string 'bench': {data!r}")
        bench = data["bench"]
        figures = _mapping(data, "figures")
        units = _mapping(data, "units")
        if set(units) != set(figures):
            raise BenchFormatError(
                f"{bench}: every figure needs a unit and every unit a figure; figures without "
                f"a unit {sorted(set(figures) - set(units))}, units without a figure "
                f"{sorted(set(units) - set(figures))}"
            )
        result = cls(bench, params=dict(_mapping(data, "params", required=False)))
        for name, value in figures.items():
            result.add(name, value, str(units[name]))
        for name, ratio in _mapping(data, "ratios").items():
            if not isinstance(ratio, dict) or "value" not in ratio:
                raise BenchFormatError(
                    f"{bench}: ratio {name!r} must be {{'value': v, 'target': t}}: {ratio!r}"
                )
            result.add_ratio(name, ratio["value"], ratio.get("target"))
        return result

    @classmethod
    def read(cls, path: Path) -> BenchResult:
        """`from_json` of a file; unreadable JSON is a `BenchFormatError` naming the file."""
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BenchFormatError(f"{path} is not JSON: {exc}") from exc
        return cls.from_json(data)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BenchFormatError(f"{what} must be a finite number, got {value!r}")
    return value


def _mapping(data: dict[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = data.get(key, None if required else {})
    if not isinstance(value, dict):
        raise BenchFormatError(f"{data.get('bench')}: {key!r} must be an object, got {value!r}")
    return value
