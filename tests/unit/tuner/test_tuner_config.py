"""tuner.config: one module per concern, every name importable from the package itself."""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import pytest

import tuner.config
from clicktune.config import load_settings
from tuner.config import (
    Candidates,
    DistributedBackend,
    Examination,
    Int8Method,
    NegativeSource,
    PropensityKind,
    RolloutMode,
    TrainMethod,
)


def test_every_submodule_name_is_importable_from_tuner_config() -> None:
    for info in pkgutil.iter_modules(tuner.config.__path__, "tuner.config."):
        module = importlib.import_module(info.name)
        for name in module.__all__:
            assert name in tuner.config.__all__, f"{info.name}.{name} is not re-exported"
            assert getattr(tuner.config, name) is getattr(module, name)


def test_environment_reaches_every_nested_tuner_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in list(os.environ):
        if key.startswith("CLICKTUNE_"):
            monkeypatch.delenv(key)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tuner:\n  train:\n    epochs: 3\n")
    env = {
        "CLICKTUNE_TUNER__PROPENSITY": "power_law",
        "CLICKTUNE_TUNER__TRAIN__METHOD": "lora",
        "CLICKTUNE_TUNER__TRAIN__NEGATIVES": "top_skipped",
        "CLICKTUNE_TUNER__TRAIN__POOLING__ENABLED": "true",
        "CLICKTUNE_TUNER__TRAIN__DISTRIBUTED__BACKEND": "gloo",
        "CLICKTUNE_TUNER__EXPORT__INT8_METHOD": "static",
        "CLICKTUNE_TUNER__BATCHES__GRACE_S": "12.5",
        "CLICKTUNE_TUNER__GATE__EXAMINATION": "cascade",
        "CLICKTUNE_TUNER__WORKER__ROLLOUT": "ab",
        "CLICKTUNE_TUNER__WORKER__CANDIDATES": "both",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(cfg).tuner
    assert settings.propensity is PropensityKind.power_law
    assert settings.train.epochs == 3  # from the file: nested keys merge
    assert settings.train.method is TrainMethod.lora
    assert settings.train.negatives is NegativeSource.top_skipped
    assert settings.train.pooling.enabled
    assert settings.train.distributed.backend is DistributedBackend.gloo
    assert settings.export.int8_method is Int8Method.static
    assert settings.batches.grace_s == 12.5
    assert settings.gate.examination is Examination.cascade
    assert settings.worker.rollout is RolloutMode.ab
    assert settings.worker.candidates is Candidates.both
