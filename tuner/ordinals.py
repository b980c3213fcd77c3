"""Cross-check of the UBI events' `position.ordinal` against the hit lists the queries logged.

The rank of a hit, for training pairs, the examination curve and the gate alike, is its position
in the query's `query_response_hit_ids` (`Session.rank_of`, 0-based). The event's optional
`event_attributes.position.ordinal` is what the front end says it showed; front ends count it
from 0 or from 1, or leave it out, and the UBI schema does not say which. So the ordinal never
sets a rank, a label or a weight: it is only compared with the shown position, per
`application`, to notice a front end that logs its hit list in another order than it shows it
(or cuts the list short).

An application's base is the offset, 0 or 1, under which more of its actions' ordinals equal
their shown position (0 on a tie). Under that base an action mismatches when its ordinal minus
the base is not the shown position of its object; an object missing from the hit list always
mismatches. Actions without an ordinal are counted as missing, never as mismatches.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from tuner.sessions import Session

__all__ = ["OrdinalCheck", "check_ordinals", "ordinal_metrics", "report_ordinals"]

log = logging.getLogger(__name__)
BASES = (0, 1)


@dataclass(frozen=True)
class OrdinalCheck:
    """One application's ordinals against the shown positions, under its detected base."""

    application: str | None  # the UBI `application` of the queries; None when they name none
    base: int  # 0 or 1: what the application's first shown hit is numbered
    checked: int  # actions with an ordinal
    mismatches: int  # of those, ordinals that do not name the shown position under `base`
    missing: int  # actions without an ordinal


def check_ordinals(sessions: Sequence[Session]) -> list[OrdinalCheck]:
    """One check per application of `sessions` (those with no application as one), in name
    order; an application whose actions carry no ordinal at all reports base 0."""
    agree: dict[str | None, list[int]] = {}  # application -> agreeing actions per base
    checked: dict[str | None, int] = {}
    missing: dict[str | None, int] = {}
    for session in sessions:
        app = session.application
        counts = agree.setdefault(app, [0] * len(BASES))
        for action in session.actions:
            if action.ordinal is None:
                missing[app] = missing.get(app, 0) + 1
                continue
            checked[app] = checked.get(app, 0) + 1
            rank = session.rank_of(action.object_id)
            for i, base in enumerate(BASES):
                counts[i] += rank is not None and action.ordinal - base == rank
    checks = []
    for app in sorted(agree, key=lambda a: (a is not None, a or "")):
        counts = agree[app]
        best = max(range(len(BASES)), key=lambda i: (counts[i], -i))  # 0 on a tie
        total = checked.get(app, 0)
        checks.append(
            OrdinalCheck(app, BASES[best], total, total - counts[best], missing.get(app, 0))
        )
    return checks


def report_ordinals(checks: Sequence[OrdinalCheck], logger: logging.Logger = log) -> None:
    """A log line per application: a warning where ordinals and shown positions disagree."""
    for check in checks:
        name = repr(check.application) if check.application is not None else "(none)"
        if check.mismatches:
            logger.warning(
                "ordinals of application %s: %d of %d actions disagree with the shown position "
                "under base %d (%d without an ordinal); ranks come from the shown hit list, "
                "so check that the front end logs query_response_hit_ids in the order it shows",
                name,
                check.mismatches,
                check.checked,
                check.base,
                check.missing,
            )
        else:
            logger.info(
                "ordinals of application %s: base %d, all %d agree with the shown position "
                "(%d without an ordinal)",
                name,
                check.base,
                check.checked,
                check.missing,
            )


def ordinal_metrics(checks: Sequence[OrdinalCheck]) -> dict[str, int]:
    """The checks summed over applications, for the iteration's recorded numbers."""
    return {
        "ordinal_checked": sum(c.checked for c in checks),
        "ordinal_mismatches": sum(c.mismatches for c in checks),
        "ordinal_missing": sum(c.missing for c in checks),
        "ordinal_one_based_applications": sum(c.base == 1 for c in checks),
    }
