"""A model slot: the encoder that requests use now, replaceable while serving."""

from __future__ import annotations

import threading
from collections.abc import Callable

from serving.encoders.encoder import ServableEncoder

__all__ = ["EncoderWrapper", "ModelSlot"]

EncoderWrapper = Callable[[ServableEncoder], ServableEncoder]


class ModelSlot:
    """Holds the current encoder; `swap` replaces it atomically.

    A request takes `current` once and uses that object to the end, so requests in flight
    finish on the old model while new ones get the new model. `name` labels the slot in
    metrics and the admin API (the alias or arm it serves). `instrument` installs a wrapper
    (metrics) applied to the current encoder and to every encoder swapped in later; a second
    call replaces the first (the slot keeps the unwrapped encoder).
    """

    def __init__(self, encoder: ServableEncoder | None = None, name: str = "production") -> None:
        self.name = name
        self._wrap: EncoderWrapper | None = None
        self._raw = encoder
        self._encoder = encoder
        self._lock = threading.Lock()

    @property
    def current(self) -> ServableEncoder | None:
        return self._encoder

    @property
    def version(self) -> str | None:
        """The version served now, or None when no model is loaded."""
        encoder = self._encoder
        return encoder.version if encoder is not None else None

    def swap(self, encoder: ServableEncoder) -> ServableEncoder | None:
        """Install `encoder`; return the one it replaced."""
        with self._lock:
            wrapped = self._wrap(encoder) if self._wrap is not None else encoder
            previous, self._raw, self._encoder = self._raw, encoder, wrapped
        return previous

    def instrument(self, wrap: EncoderWrapper) -> None:
        """Wrap the current encoder and every later one with `wrap`."""
        with self._lock:
            self._wrap = wrap
            if self._raw is not None:
                self._encoder = wrap(self._raw)
