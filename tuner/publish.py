"""Put an exported model directory into the registry, keeping its torch weights beside it.

Serving reads only model.onnx, tokenizer.json and clicktune.json; the tuner also needs `st/`
(the sentence-transformers weights) so that the next iteration starts from this version.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from serving.errors import RegistryError
from serving.models.registry import ModelVersion
from tuner.base_models import TORCH_WEIGHTS_DIR

__all__ = ["ImportResult", "ModelRegistry", "import_model", "model_metadata", "publish"]


class ModelRegistry(Protocol):
    """What the tuner needs of the model registry (`serving.models.registries.ModelRegistry`)."""

    def add(self, src_dir: Path, version: str | None = None) -> ModelVersion: ...

    def get(self, ref: str) -> ModelVersion: ...

    def set_alias(self, alias: str, version: str) -> None: ...

    def aliases(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class ImportResult:
    """The registered version, and whether this call created it or found it there."""

    version: ModelVersion
    created: bool
    alias_set: bool
    parity_min_cosine: float | None = None
    seconds: float = 0.0


def publish(registry: ModelRegistry, model_dir: Path, version: str | None = None) -> ModelVersion:
    """Register `model_dir` as `version` (the next `v<N>` when None) with its torch weights."""
    added = registry.add(model_dir, version)
    if (model_dir / TORCH_WEIGHTS_DIR).is_dir() and not (added.path / TORCH_WEIGHTS_DIR).is_dir():
        raise RegistryError(
            f"{added.path} lacks the torch weights {TORCH_WEIGHTS_DIR}/ of {model_dir}"
        )
    return added


def model_metadata(version: ModelVersion) -> dict[str, Any]:
    """The version's `clicktune.json` (base model, parity, metrics)."""
    return json.loads((version.path / "clicktune.json").read_text())


def import_model(
    registry: ModelRegistry,
    name_or_path: str,
    version: str = "base",
    alias: str | None = "production",
    max_length: int = 256,
) -> ImportResult:
    """Export a model as registry `version` and point `alias` at it; a no-op if it exists.

    When the version already exists the alias is only set if it names nothing yet, so running
    the import again never moves `production` away from a trained model.
    """
    existing = _existing(registry, version)
    if existing is not None:
        alias_set = alias is not None and alias not in registry.aliases()
        if alias is not None and alias_set:
            registry.set_alias(alias, version)
        return ImportResult(registry.get(version), created=False, alias_set=alias_set)
    from tuner.base_models import load_text_model
    from tuner.export import export_text_model

    started = time.perf_counter()
    model = load_text_model(name_or_path, device="cpu")
    with tempfile.TemporaryDirectory(prefix="clicktune-import-") as tmp:
        report = export_text_model(
            model,
            Path(tmp) / "model",
            version=version,
            parent=None,
            base_model=name_or_path,
            max_length=max_length,
        )
        added = publish(registry, report.path, version)
    if alias is not None:
        registry.set_alias(alias, added.version)
    return ImportResult(
        registry.get(added.version),
        created=True,
        alias_set=alias is not None,
        parity_min_cosine=report.parity_min_cosine,
        seconds=round(time.perf_counter() - started, 2),
    )


def _existing(registry: ModelRegistry, version: str) -> ModelVersion | None:
    try:
        found = registry.get(version)
    except RegistryError:
        return None
    return found if found.version == version else None
