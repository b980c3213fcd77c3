"""What every subcommand shares: lazily loaded settings, clean error exits."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer

from clicktune.config import ConfigError, Settings, load_settings


@dataclass
class State:
    """Per-invocation state carried in typer's context object."""

    config_path: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config_path)
            except ConfigError as exc:
                fail(str(exc))
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings for this invocation (loaded once, on first use)."""
    state = ctx.find_root().obj
    if not isinstance(state, State):  # invoked without the root callback (tests)
        state = State()
        ctx.find_root().obj = state
    return state.settings


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `message` to stderr and exit with `code`; no traceback for expected errors."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


TRAINING_STACK = ("torch", "sentence_transformers", "onnx")
TUNER_EXTRA = "pip install 'clicktune[tuner]'"


def require_training_stack(what: str) -> None:
    """Fail, saying what to install, when `what` needs the `tuner` extra and it is missing (a
    serving-only install has onnxruntime but no torch)."""
    missing = [name for name in TRAINING_STACK if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            f"{what} needs the training stack, which this install lacks (missing: "
            f"{', '.join(missing)}): install it with {TUNER_EXTRA}"
        )


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (machine-readable output of `--json`)."""
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
