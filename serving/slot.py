"""A model slot: the encoder that requests use now, replaceable while serving."""

from __future__ import annotations

import threading

from serving.encoder import ServableEncoder

__all__ = ["ModelSlot"]


class ModelSlot:
    """Holds the current encoder; `swap` replaces it atomically.

    A request takes `current` once and uses that object to the end, so requests in flight
    finish on the old model while new ones get the new model.
    """

    def __init__(self, encoder: ServableEncoder | None = None) -> None:
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def current(self) -> ServableEncoder | None:
        return self._encoder

    def swap(self, encoder: ServableEncoder) -> ServableEncoder | None:
        """Install `encoder`; return the one it replaced."""
        with self._lock:
            previous, self._encoder = self._encoder, encoder
        return previous
