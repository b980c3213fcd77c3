"""A registered tiny random-weight CLIP model and swatch PNGs, for iteration and serving tests."""

from __future__ import annotations

from pathlib import Path

import torch

from serving.models.registry import LocalRegistry, ModelVersion
from tests.unit.tuner.test_tuner_clip import COLOURS, TINY, swatch
from tuner.clip import build_clip_model
from tuner.export_clip import export_clip_model

__all__ = ["COLOURS", "register_tiny_clip", "write_swatches"]


def register_tiny_clip(registry: LocalRegistry, work: Path, version: str = "c1") -> ModelVersion:
    """Export a tiny CLIP (both towers + `clip/` weights) and register it as `version`."""
    torch.manual_seed(0)
    clip = build_clip_model(TINY)
    exported = export_clip_model(
        clip, work / version, version=version, parent=None, base_model="tiny-clip"
    )
    return registry.add(exported.path, version)


def write_swatches(folder: Path) -> dict[str, Path]:
    """One noisy colour swatch PNG per colour name: name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, (name, rgb) in enumerate(COLOURS.items()):
        files[name] = folder / f"{name}.png"
        swatch(rgb, i).save(files[name])
    return files
