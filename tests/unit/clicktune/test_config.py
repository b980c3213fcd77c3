from __future__ import annotations

import os
from pathlib import Path

import pytest

from clicktune.config import DEFAULT_CONFIG, ConfigError, Settings, load_settings


def _without_clicktune_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment wins over a YAML file: a run pointed at other servers
    (CLICKTUNE_OPENSEARCH__URL=...) must not change what these tests read from their files."""
    for key in list(os.environ):
        if key.startswith("CLICKTUNE_"):
            monkeypatch.delenv(key)


def test_default_yaml_matches_model_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # configs/default.yaml documents the defaults; it must not silently drift from the models.
    _without_clicktune_environment(monkeypatch)
    from_file = load_settings(DEFAULT_CONFIG).model_dump(exclude={"home"})
    from_model = Settings().model_dump(exclude={"home"})
    assert from_file == from_model


def test_environment_overrides_yaml_per_nested_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "opensearch:\n  url: http://search:9200\n  username: ct\ningest:\n  batch_size: 7\n"
    )
    monkeypatch.setenv("CLICKTUNE_OPENSEARCH__URL", "https://prod:9200")
    monkeypatch.setenv("CLICKTUNE_OPENSEARCH__PASSWORD", "s3cret")
    settings = load_settings(cfg)
    assert settings.opensearch.url == "https://prod:9200"
    assert settings.opensearch.username == "ct"  # kept from YAML: nested keys merge
    assert settings.opensearch.password is not None
    assert settings.opensearch.password.get_secret_value() == "s3cret"
    assert settings.ingest.batch_size == 7


def test_secret_in_yaml_is_refused_naming_the_env_var(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("opensearch:\n  password: hunter2\n")
    with pytest.raises(ConfigError, match="CLICKTUNE_OPENSEARCH__PASSWORD"):
        load_settings(cfg)


def test_secrets_never_appear_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKTUNE_OPENSEARCH__PASSWORD", "hunter2")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.model_dump_json()


def test_bad_value_names_key_and_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _without_clicktune_environment(monkeypatch)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("opensearch:\n  url: search:9200\ningest:\n  batch_size: 0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    message = str(err.value)
    assert "search:9200" in message and "http://" in message
    assert "batch_size" in message


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("opensaerch:\n  url: http://x:9200\n")
    with pytest.raises(ConfigError, match="opensaerch"):
        load_settings(cfg)


def test_home_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    assert load_settings().home == tmp_path
