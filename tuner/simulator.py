"""Simulated users: turn the hits a model shows into UBI clicks, carts and purchases.

One module shared by tests, benchmarks and the demo. Given the graded judgments of a collection
(g = a hit's grade, 0 when unjudged; G = the collection's top grade), a hit's gain is

    gain(g) = (2**g - 1) / (2**G - 1)     (0 for g <= 0)

and an examined hit at 0-based rank k is clicked with its attraction

    a_k(g) = n_k + (1 - n_k) * gain(g),   n_k = noise + (1 - noise) * trust_bias / (k + 1)

so irrelevant and unjudged hits draw `n_k` clicks. Without trust bias (`trust_bias` 0, the
default) n_k = `noise` at every rank. Trust bias (Agarwal et al., "Addressing Trust Bias for
Unbiased Learning-to-Rank", WWW 2019: an examined hit is clicked with eps_plus(k) if relevant,
eps_minus(k) if not) makes users trust the top ranks: the false-click rate n_k is raised by
`trust_bias` of the headroom at rank 0 and the raise decays as 1/(k + 1); relevant hits gain the
same lift on what their gain leaves. It applies to every click model below.

How the user scans the list (`click_model`), over the first `shown` hits:

- position (the default): rank k is examined with `p(k) = (1 / (k + 1)) ** eta`, each rank
  independently; an examined hit is clicked with a_k(g).
- cascade: top-down; rank k is examined with p(k), and a rank left unexamined ends the scan; an
  examined hit is clicked with a_k(g), and after a click the user stops with `cascade_stop`.
- dbn (Chapelle & Zhang, "A Dynamic Bayesian Network Click Model for Web Search Ranking",
  WWW 2009): top-down from rank 0, which is always examined (`eta` does not apply). At each
  examined rank the user clicks with a_k(g); after a click the user is satisfied with
  s(g) = `dbn_satisfaction` * gain(g) and stops; otherwise (no click, or not satisfied) the user
  goes on to the next rank with `dbn_continue` (gamma) and stops with 1 - gamma.

A click on a top-grade hit turns into an add_to_cart with `cart_prob`, and that into a purchase
with `purchase_prob`. The records are UBI JSON exactly as a front end would send them.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

EVENT_NAMESPACE = uuid.UUID("8f3b0c1e-5d2a-4c6b-9e1f-0c11c4ce7a11")  # fixed: ids are stable


class ClickModel(StrEnum):
    """How a simulated user scans the result list (the module docstring gives each process)."""

    position = "position"
    cascade = "cascade"
    dbn = "dbn"


PROBABILITIES = (
    "noise",
    "cascade_stop",
    "cart_prob",
    "purchase_prob",
    "trust_bias",
    "dbn_continue",
    "dbn_satisfaction",
)


@dataclass(frozen=True)
class UserModel:
    """The behaviour of the simulated users (scan, examination curve, noise, trust, outcomes).

    `click_model` also takes its name as a string; a value outside its rule raises ValueError
    naming the value and the rule.
    """

    click_model: ClickModel = ClickModel.position
    eta: float = 1.0
    shown: int = 10
    noise: float = 0.05
    cascade_stop: float = 0.6
    cart_prob: float = 0.3
    purchase_prob: float = 0.3
    trust_bias: float = 0.0  # 0: users click irrelevant hits at `noise` on every rank
    dbn_continue: float = 0.9  # gamma: dbn users go on to the next rank with it
    dbn_satisfaction: float = 0.8  # a dbn click on a top-grade hit satisfies with it

    def __post_init__(self) -> None:
        if self.click_model not in set(ClickModel):
            choices = ", ".join(ClickModel)
            raise ValueError(f"click model {self.click_model!r} is not one of {choices}")
        object.__setattr__(self, "click_model", ClickModel(self.click_model))
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta {self.eta!r} must be a finite number >= 0")
        if self.shown < 1:
            raise ValueError(f"shown {self.shown!r} must be >= 1 (hits a user can see)")
        for name in PROBABILITIES:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} {value!r} must be a probability in [0, 1]")

    def examination(self, rank: int) -> float:
        """Probability that a user looks at the hit at 0-based `rank` (position and cascade)."""
        return float((1.0 / (rank + 1)) ** self.eta)

    def false_click(self, rank: int) -> float:
        """n_k: probability of a click on an examined irrelevant hit at 0-based `rank`."""
        return self.noise + (1.0 - self.noise) * self.trust_bias / (rank + 1)

    def attraction(self, grade: int, top_grade: int, rank: int | None = None) -> float:
        """Probability of a click on an examined hit of `grade` (0 = not relevant) at 0-based
        `rank`; `rank` None leaves trust bias out (what the hit itself is worth to a user)."""
        noise = self.noise if rank is None else self.false_click(rank)
        return noise + (1.0 - noise) * gain(grade, top_grade)

    def satisfaction(self, grade: int, top_grade: int) -> float:
        """s(g): probability that a dbn user who clicked a hit of `grade` stops satisfied."""
        return self.dbn_satisfaction * gain(grade, top_grade)

    def config(self) -> dict[str, object]:
        """The parameters as plain JSON values, for reports that say which users produced them."""
        return {**asdict(self), "click_model": str(self.click_model)}


def gain(grade: int, top_grade: int) -> float:
    """(2**g - 1) / (2**G - 1): a hit's share of the top grade's gain, 0 when not relevant."""
    if grade <= 0 or top_grade <= 0:
        return 0.0
    return (2**grade - 1) / (2**top_grade - 1)


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
        events: list[dict] = []
        for rank, object_id, grade in self._clicks(hits, self.qrels.get(judged_query, {})):
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
        return events

    def _clicks(
        self, hits: Sequence[str], grades: Mapping[str, int]
    ) -> Iterator[tuple[int, str, int]]:
        """(rank, object id, grade) of each click, top-down. Lazy: a click's outcomes are drawn
        before the scan goes on, so the same seed draws the same actions."""
        user = self.user
        for rank, object_id in enumerate(hits[: user.shown]):
            dbn = user.click_model is ClickModel.dbn  # examination follows from the scan
            if not dbn and self._rng.random() >= user.examination(rank):
                if user.click_model is ClickModel.cascade:
                    return
                continue
            grade = grades.get(object_id, 0)
            clicked = self._rng.random() < user.attraction(grade, self._top_grade, rank)
            if clicked:
                yield rank, object_id, grade
            if not self._goes_on(clicked, grade):
                return

    def _goes_on(self, clicked: bool, grade: int) -> bool:
        """Whether the user scans on after a rank (draws only where the click model stops)."""
        if self.user.click_model is ClickModel.cascade:
            return not (clicked and self._rng.random() < self.user.cascade_stop)
        if self.user.click_model is ClickModel.dbn:
            satisfaction = self.user.satisfaction(grade, self._top_grade)
            if clicked and self._rng.random() < satisfaction:
                return False
            return self._rng.random() < self.user.dbn_continue
        return True

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
