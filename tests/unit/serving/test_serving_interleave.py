"""Team-draft interleaving: fair merge, no duplicates, clicks credited to the contributing team."""

from __future__ import annotations

import random

from serving.rollout.interleave import TEAM_A, TEAM_B, InterleaveTally, credit, team_draft


def test_team_draft_merges_without_duplicates_and_keeps_each_teams_order() -> None:
    a = ["d1", "d2", "d3", "d4", "d5"]
    b = ["d3", "d6", "d1", "d7", "d8"]
    merged, teams = team_draft(a, b, 6, random.Random(1))
    assert len(merged) == len(set(merged)) == 6 and len(teams) == 6
    from_a = [d for d, t in zip(merged, teams, strict=True) if t == TEAM_A]
    from_b = [d for d, t in zip(merged, teams, strict=True) if t == TEAM_B]
    assert from_a == [d for d in a if d in from_a] and from_b == [d for d in b if d in from_b]
    assert abs(len(from_a) - len(from_b)) <= 1


def test_team_draft_is_fair_over_many_queries() -> None:
    rng = random.Random(0)
    firsts = [team_draft(["a", "b"], ["c", "d"], 2, rng)[1][0] for _ in range(2000)]
    assert 0.45 < firsts.count(TEAM_A) / 2000 < 0.55


def test_a_short_ranking_lets_the_other_team_fill_the_list() -> None:
    merged, teams = team_draft(["x"], ["p", "q", "r"], 4, random.Random(2))
    assert sorted(merged) == ["p", "q", "r", "x"] and teams.count(TEAM_A) == 1


def test_clicks_are_credited_to_the_team_that_contributed_the_hit() -> None:
    teams = [TEAM_A, TEAM_B, TEAM_B, TEAM_A]
    assert credit(teams, [1, 2]) == {TEAM_A: 0, TEAM_B: 2}
    assert credit(teams, [0, 9]) == {TEAM_A: 1, TEAM_B: 0}
    tally = InterleaveTally()
    for clicks in ([1, 2], [0], [], [0, 1]):
        tally.add(credit(teams, clicks))
    assert (tally.wins, tally.losses, tally.ties) == (1, 1, 2)
