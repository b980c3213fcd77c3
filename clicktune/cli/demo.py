"""`clicktune demo`: the closed loop on a judged collection, with a report."""

from __future__ import annotations

from clicktune.cli.common import planned


def demo() -> None:
    """Run the whole loop N rounds with simulated users and report the uplift per round."""
    planned("demo", 9)
