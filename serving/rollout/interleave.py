"""Team-draft interleaving (Radlinski et al. 2008): merge two rankings, remember who gave what.

Each round the team with fewer picks so far (a coin flip on ties) adds its best document not yet
shown. `teams[i]` names the team ("A" = control, "B" = candidate) that contributed hit i; the
list is stored aligned with `query_response_hit_ids` in the UBI query record (a list, not a
doc-id-keyed dict, so the dynamic mapping of `query_attributes` cannot explode). A click is
credited to the team of the hit clicked; per query the team with more clicks wins.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TEAM_A", "TEAM_B", "InterleaveTally", "credit", "team_draft"]

TEAM_A, TEAM_B = "A", "B"


def team_draft(
    ranking_a: Sequence[str], ranking_b: Sequence[str], k: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """The merged top `k` ids and, per position, the team that contributed it."""
    merged: list[str] = []
    teams: list[str] = []
    shown: set[str] = set()
    picks = {TEAM_A: 0, TEAM_B: 0}
    cursor = {TEAM_A: 0, TEAM_B: 0}
    rankings = {TEAM_A: list(ranking_a), TEAM_B: list(ranking_b)}
    while len(merged) < k:
        if picks[TEAM_A] != picks[TEAM_B]:
            team = TEAM_A if picks[TEAM_A] < picks[TEAM_B] else TEAM_B
        else:
            team = TEAM_A if rng.random() < 0.5 else TEAM_B
        doc = _next_unshown(rankings[team], cursor, team, shown)
        if doc is None:  # this team ran out: the other one fills the rest
            team = TEAM_B if team == TEAM_A else TEAM_A
            doc = _next_unshown(rankings[team], cursor, team, shown)
            if doc is None:
                break
        merged.append(doc)
        teams.append(team)
        shown.add(doc)
        picks[team] += 1
    return merged, teams


def _next_unshown(
    ranking: list[str], cursor: dict[str, int], team: str, shown: set[str]
) -> str | None:
    while cursor[team] < len(ranking):
        doc = ranking[cursor[team]]
        cursor[team] += 1
        if doc not in shown:
            return doc
    return None


def credit(teams: Sequence[str], clicked_ranks: Sequence[int]) -> dict[str, int]:
    """Clicks per team for the clicked 0-based ranks (ranks outside the list are ignored)."""
    counts = {TEAM_A: 0, TEAM_B: 0}
    for rank in clicked_ranks:
        if 0 <= rank < len(teams):
            counts[teams[rank]] += 1
    return counts


@dataclass
class InterleaveTally:
    """Queries won by the candidate (B), by control (A), and ties (equal clicks, incl. none)."""

    wins: int = 0
    losses: int = 0
    ties: int = 0

    def add(self, counts: dict[str, int]) -> None:
        if counts[TEAM_B] > counts[TEAM_A]:
            self.wins += 1
        elif counts[TEAM_A] > counts[TEAM_B]:
            self.losses += 1
        else:
            self.ties += 1
