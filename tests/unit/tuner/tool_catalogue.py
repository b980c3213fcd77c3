"""A small hardware catalogue the one-step gradient tests embed (positives and hard negatives)."""

from __future__ import annotations

DOCS = {
    "d0": "red cordless drill with two batteries",
    "d1": "blue hand saw",
    "d2": "red hammer drill",
    "d3": "green claw hammer for framing",
    "d4": "old hemp rope",
    "d5": "new duct tape",
    "d6": "yellow tape measure",
}
