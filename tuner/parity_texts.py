"""Held-out texts for the export parity check: short, long, punctuated, past max_length."""

from __future__ import annotations

__all__ = ["parity_texts"]

_SENTENCES = (
    "cordless drill",
    "How do I fix a leaking kitchen faucet?",
    "boundary layer transition on a flat plate at supersonic speeds",
    "Indexing and retrieval of scientific literature: a survey of methods.",
    "20V MAX lithium-ion battery, 2.0 Ah, fits all tools in the line!",
    "the effect of heat transfer on skin friction in turbulent flow (experimental results)",
    "ÜBER café naïve résumé — unicode & symbols: 50% off; #1 choice",
    "a",
)
# How often each text repeats its sentence: mostly short, a few long, two past 256 tokens.
_REPEATS = (1,) * 16 + (2, 2, 3, 3, 4, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40)


def parity_texts(count: int = 32) -> list[str]:
    """`count` texts of growing length; the longest exceed 256 tokens to test truncation."""
    return [
        " ".join([_SENTENCES[i % len(_SENTENCES)]] * _REPEATS[i % len(_REPEATS)])
        for i in range(count)
    ]
