"""The default users draw exactly the actions they drew before the dbn and trust-bias options.

Benchmarks, the demo and their recorded results depend on the simulator's draws for a seed;
a new option must not move them. The expected actions were drawn before the options existed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tuner.simulator import ClickModel, ClickSimulator, UserModel

PIN_QRELS = {"q": {"d0": 3, "d2": 1, "d5": 2, "d7": 3}}
PIN_HITS = ["d9", "d2", "d0", "d3", "d5", "d4", "d7", "d6", "d8", "d1", "d10"]
START = datetime(2024, 1, 1, tzinfo=UTC)


def _actions(user: UserModel, seed: int, sessions: int = 12) -> list[str]:
    """Each session's actions as `action@rank+milliseconds` (the times pin every random draw)."""
    sim = ClickSimulator(PIN_QRELS, user, seed=seed)
    drawn = []
    for i in range(sessions):
        events = sim.events(f"id{i}", "q", PIN_HITS, client_id="c", at=START)
        drawn.append(" ".join(_action(e) for e in events))
    return drawn


def _action(event: dict) -> str:
    at = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    ms = round((at - START).total_seconds() * 1000)
    return f"{event['action_name']}@{event['event_attributes']['position']['ordinal']}+{ms}"


PINNED = [
    (
        UserModel(),
        5,
        [
            "",
            "",
            "click@2+5362",
            "click@2+4015 add_to_cart@2+5032",
            "click@2+1090 click@6+3072 add_to_cart@6+7851",
            "click@2+5298 click@4+9352",
            "click@1+4445 click@3+10379",
            "click@2+1652",
            "",
            "click@6+5336",
            "",
            "click@2+5083",
        ],
    ),
    (
        UserModel(click_model=ClickModel.cascade, eta=0.3),
        6,
        [
            "click@2+4798",
            "click@2+1964",
            "",
            "click@2+2455 add_to_cart@2+8212",
            "",
            "",
            "click@2+3626",
            "click@2+4491",
            "click@0+2664 click@2+3933 add_to_cart@2+7048",
            "",
            "click@2+4920 add_to_cart@2+6780",
            "click@2+5396 add_to_cart@2+9457",
        ],
    ),
    (
        UserModel(eta=0.5, noise=0.2),
        7,
        [
            "click@0+4254 click@2+5442 click@3+6895",
            "click@0+5292 click@1+6881 click@2+11075 add_to_cart@2+13937 click@4+15967",
            "",
            "",
            "click@2+1112 click@3+2698",
            "click@2+5420 click@4+7580 click@7+10675",
            "",
            "click@0+2043 click@2+4861 add_to_cart@2+5989 purchase@2+11361 click@4+14097 "
            "click@5+19342 click@9+22055",
            "click@1+5754 click@2+6890",
            "click@9+2397",
            "click@2+5775 click@4+7796",
            "click@0+4302 click@6+7282",
        ],
    ),
]


@pytest.mark.parametrize(("user", "seed", "expected"), PINNED, ids=["position", "cascade", "noisy"])
def test_default_options_draw_the_same_actions_as_before(
    user: UserModel, seed: int, expected: list[str]
) -> None:
    assert _actions(user, seed) == expected
