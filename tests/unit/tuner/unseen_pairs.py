"""Queries that share no word with the documents they buy: only training can connect them.

Arbitrary query -> document mappings no base model can already know (the i-th query buys
`d<i>`); each pair weighs 1 to 3 and has the next document as its hard negative.
"""

from __future__ import annotations

from tuner.pairs import TrainingPair

DOCS = {
    "d0": "bananas are yellow",
    "d1": "the moon orbits earth",
    "d2": "jazz piano chords",
    "d3": "tax return deadline",
    "d4": "mountain bike tyres",
    "d5": "sourdough starter",
    "d6": "cat litter box",
    "d7": "rust borrow checker",
}
QUERIES = ["zork", "plugh", "xyzzy", "frotz", "gnusto", "rezrov", "blorb", "yomin"]
PAIRS = [TrainingPair(q, f"d{i}", 1.0 + i % 3, (f"d{(i + 1) % 8}",)) for i, q in enumerate(QUERIES)]
