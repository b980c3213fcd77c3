"""Simulated users: turn the hits a model shows into UBI clicks, carts and purchases.

One module shared by tests, benchmarks and the demo. Given the graded judgments of a collection,
a user examines rank k (0-based) with probability `p(k) = (1 / (k + 1)) ** eta` (position-based
model) and clicks an examined hit with its attraction

    a(g) = noise + (1 - noise) * (2**g - 1) / (2**G - 1)     (g = grade, G = top grade)

so unjudged and irrelevant hits draw `noise` clicks. In the cascade model the user scans top-down
and stops after a click with probability `cascade_stop`. A click on a top-grade hit turns into an
add_to_cart with `cart_prob`, and that into a purchase with `purchase_prob`. The records are UBI
JSON exactly as a front end would send them.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

EVENT_NAMESPACE = uuid.UUID("8f3b0c1e-5d2a-4c6b-9e1f-0c11c4ce7a11")  # fixed: ids are stable


class ClickModel(StrEnum):
    """How a simulated user scans the result list."""

    position = "position"
    cascade = "cascade"


@dataclass(frozen=True)
class UserModel:
    """The behaviour of the simulated users (examination curve, noise, outcomes)."""

    click_model: ClickModel = ClickModel.position
    eta: float = 1.0
    shown: int = 10
    noise: float = 0.05
    cascade_stop: float = 0.6
    cart_prob: float = 0.3
    purchase_prob: float = 0.3

    def examination(self, rank: int) -> float:
        """Probability that a user looks at the hit at 0-based `rank`."""
        return float((1.0 / (rank + 1)) ** self.eta)

    def attraction(self, grade: int, top_grade: int) -> float:
        """Probability of a click on an examined hit of `grade` (0 = not relevant)."""
        if grade <= 0 or top_grade <= 0:
            return self.noise
        return self.noise + (1.0 - self.noise) * (2**grade - 1) / (2**top_grade - 1)


@dataclass
class ClickSimulator:
    """Draws the actions of one user on the hits shown for one query."""

    qrels: Mapping[str, Mapping[str, int]]
    user: UserModel = field(default_factory=UserModel)
    seed: int = 0
    application: str = "clicktune-simulator"

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        grades = [g for docs in self.qrels.values() for g in docs.values()]
        self._top_grade = max(grades, default=1)

    def events(
        self,
        query_id: str,
        judged_query: str,
        hits: Sequence[str],
        *,
        client_id: str,
        session_id: str | None = None,
        at: datetime | None = None,
    ) -> list[dict]:
        """UBI event records for the actions a user takes on `hits` (shown in this order)."""
        at = at or datetime.now(UTC)
        grades = self.qrels.get(judged_query, {})
        events: list[dict] = []
        for rank, object_id in enumerate(hits[: self.user.shown]):
            if self._rng.random() >= self.user.examination(rank):
                if self.user.click_model is ClickModel.cascade:
                    break
                continue
            grade = grades.get(object_id, 0)
            if self._rng.random() >= self.user.attraction(grade, self._top_grade):
                continue
            for action in self._outcomes(grade):
                at += timedelta(seconds=1 + self._rng.random() * 5)
                events.append(
                    event_record(
                        action,
                        query_id,
                        object_id,
                        rank,
                        client_id,
                        session_id,
                        at,
                        self.application,
                    )
                )
            if (
                self.user.click_model is ClickModel.cascade
                and self._rng.random() < self.user.cascade_stop
            ):
                break
        return events

    def _outcomes(self, grade: int) -> list[str]:
        actions = ["click"]
        if grade >= self._top_grade and self._rng.random() < self.user.cart_prob:
            actions.append("add_to_cart")
            if self._rng.random() < self.user.purchase_prob:
                actions.append("purchase")
        return actions


def query_record(
    query_id: str,
    user_query: str,
    hits: Sequence[str],
    *,
    client_id: str,
    at: datetime,
    application: str = "clicktune-simulator",
    attributes: Mapping[str, object] | None = None,
) -> dict:
    """The UBI query record a front end sends for a query and the hits it showed."""
    return {
        "query_id": query_id,
        "timestamp": _iso(at),
        "client_id": client_id,
        "user_query": user_query,
        "query_response_hit_ids": list(hits),
        "application": application,
        "query_attributes": dict(attributes or {}),
    }


def event_record(
    action: str,
    query_id: str,
    object_id: str,
    rank: int,
    client_id: str,
    session_id: str | None,
    at: datetime,
    application: str = "clicktune-simulator",
) -> dict:
    """One UBI event record; its event id is derived from (query, object, action)."""
    event_id = str(uuid.uuid5(EVENT_NAMESPACE, f"{query_id}/{object_id}/{action}"))
    attributes: dict[str, object] = {
        "object": {"object_id": object_id, "object_id_field": "_id"},
        "position": {"ordinal": rank},
        "event_id": event_id,
    }
    if session_id is not None:
        attributes["session_id"] = session_id
    return {
        "action_name": action,
        "query_id": query_id,
        "client_id": client_id,
        "timestamp": _iso(at),
        "application": application,
        "message_type": "INFO",
        "event_attributes": attributes,
    }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
