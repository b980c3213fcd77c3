"""bench.decide's one table: error rates with Wilson 95% intervals and searches spent.

One row per collection x user model x examination x candidate (its true delta decides which
error it can make), then per collection x user model x examination and per user model x
examination over all collections the pooled rates: false promotes over every decision on a
candidate no better than live, false rejects over every decision on one >= 2% better.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.results import BenchResult
from serving.rollout.ab_stats import wilson

__all__ = ["rate", "render", "summarise", "write_outputs"]

ALL = "all"
TARGETS = {"false_promote": "<=0.05", "false_reject": "<=0.2"}


def rate(k: int, n: int) -> dict[str, Any]:
    """k of n, its share and the Wilson 95% interval (n 0: no share)."""
    low, high = wilson(k, n)
    return {
        "k": k,
        "n": n,
        "rate": round(k / n, 4) if n else None,
        "ci95": [round(low, 4), round(high, 4)],
    }


def summarise(outcomes: Sequence[Any]) -> list[dict[str, Any]]:
    """The table's rows (module doc), in order: candidates, then pooled rows."""
    from bench.decide import error_kind

    rows = []
    for key in dict.fromkeys((o.collection, o.user, o.examination, o.candidate) for o in outcomes):
        group = [o for o in outcomes if (o.collection, o.user, o.examination, o.candidate) == key]
        row = _row(*key, group)
        row["relative"] = group[0].relative
        row["counts_as"] = error_kind(group[0].relative) or "neither (0 < delta < 2%)"
        rows.append(row)
    for key in dict.fromkeys((o.collection, o.user, o.examination) for o in outcomes):
        group = [o for o in outcomes if (o.collection, o.user, o.examination) == key]
        rows.append(_row(*key, ALL, group))
    if len({o.collection for o in outcomes}) > 1:
        for user, examination in dict.fromkeys((o.user, o.examination) for o in outcomes):
            group = [o for o in outcomes if (o.user, o.examination) == (user, examination)]
            rows.append(_row(ALL, user, examination, ALL, group))
    return rows


def _row(
    collection: str, user: str, examination: str, candidate: str, group: Sequence[Any]
) -> dict[str, Any]:
    from bench.decide import error_kind, is_error

    row: dict[str, Any] = {
        "collection": collection,
        "user": user,
        "examination": examination,
        "candidate": candidate,
    }
    row["decisions"] = len(group)
    for gate, promoted in (("old", lambda o: o.old_promoted), ("new", lambda o: o.new_promoted)):
        for kind in ("false_promote", "false_reject"):
            at_risk = [o for o in group if error_kind(o.relative) == kind]
            errors = sum(is_error(kind, promoted(o)) for o in at_risk)
            row[f"{gate}_{kind}"] = rate(errors, len(at_risk))
    row["verdicts"] = dict(Counter(o.verdict for o in group))
    row["online"] = dict(Counter(o.online for o in group if o.online is not None))
    new = [o.new_searches for o in group]
    stops = [o.stop for o in group if o.stop is not None]
    row["stop"] = _spread_float(stops) if stops else None
    row["old_searches"] = _spread([o.round_searches for o in group])
    row["new_searches"] = _spread(new)
    return row


def _spread(values: Iterable[int]) -> dict[str, float]:
    values = list(values)
    return {"mean": round(sum(values) / len(values), 1), "min": min(values), "max": max(values)}


def _spread_float(values: Sequence[float]) -> dict[str, float]:
    return {"mean": round(sum(values) / len(values), 3), "min": min(values), "max": max(values)}


def _cell(figure: dict[str, Any]) -> str:
    if not figure["n"]:
        return ""
    low, high = figure["ci95"]
    return f"{figure['k']}/{figure['n']} = {figure['rate']:.0%} [{low:.0%}, {high:.0%}]"


def _counts(counts: dict[str, int], order: Sequence[str]) -> str:
    return "/".join(str(counts.get(name, 0)) for name in order)


def render(rows: Sequence[dict[str, Any]], params: dict[str, Any]) -> str:
    """The markdown table and a line of the run's settings."""
    lines = [
        "| collection | users | examination | candidate | true delta nDCG@10 | counts as "
        "| old false promote | new false promote | old false reject | new false reject "
        "| new offline P/O/R/U | online P/R/B | searches old | searches new mean [min, max] |",
        "|" + "---|" * 14,
    ]
    for row in rows:
        delta = f"{row['relative']:+.1%}" if "relative" in row else ""
        new = row["new_searches"]
        lines.append(
            f"| {row['collection']} | {row['user']} | {row['examination']} "
            f"| {row['candidate']} | {delta} "
            f"| {row.get('counts_as', '')} | {_cell(row['old_false_promote'])} "
            f"| {_cell(row['new_false_promote'])} | {_cell(row['old_false_reject'])} "
            f"| {_cell(row['new_false_reject'])} "
            f"| {_counts(row['verdicts'], ('promote', 'online', 'reject', 'undecided'))} "
            f"| {_counts(row['online'], ('promote', 'rollback', 'budget'))} "
            f"| {row['old_searches']['mean']:.0f} "
            f"| {new['mean']:.0f} [{new['min']}, {new['max']}] |"
        )
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return "\n".join(lines) + f"\n\nRun: {shown}\n"


def write_outputs(
    out: Path,
    rows: Sequence[dict[str, Any]],
    decisions: list[dict[str, Any]],
    params: dict[str, Any],
    json_path: Path | None,
) -> None:
    """decide.md and decide.json (rows and every decision) under `out`; `json_path` gets the
    pooled rates per user model in the shape of `bench/results.py`."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "decide.md").write_text(render(rows, params))
    document = {"params": params, "rows": list(rows), "decisions": decisions}
    (out / "decide.json").write_text(json.dumps(document, indent=1, default=str) + "\n")
    result = BenchResult("decide", params=params)
    for row in rows:
        if row["candidate"] != ALL:
            continue
        prefix = f"{row['collection']}_{row['user']}_{row['examination']}"
        for gate in ("old", "new"):
            for kind, target in TARGETS.items():
                figure = row[f"{gate}_{kind}"]
                if figure["n"]:
                    target_here = target if gate == "new" else None
                    result.add_ratio(f"{prefix}_{gate}_{kind}_rate", figure["rate"], target_here)
        result.add(f"{prefix}_new_searches_mean", row["new_searches"]["mean"], "searches")
    result.write(json_path)
