"""A training iteration whose live model is CLIP: loads it with open_clip, trains on the clicked
documents' images, scores text queries against image documents, exports both towers and
registers a CLIP version that serving loads through the same factory as text models."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from serving.config import EncoderSettings, ImageSettings, IndexSettings
from serving.encoders.clip_encoder import OnnxClipEncoder
from serving.encoders.model_loader import load_model_dir
from serving.index.doc_images import ImageReader, embed_documents, load_image
from serving.models.registry import LocalRegistry
from tests.unit.tuner.clip_support import COLOURS, register_tiny_clip, write_swatches
from tests.unit.tuner.test_tuner_batches import FakeSessions
from tests.unit.tuner.tuner_fakes import FakeDocuments
from tuner.batches import BatchStore, release_batch
from tuner.config import BatchSettings, GateSettings, TrainSettings, TunerSettings
from tuner.errors import NoTrainingDataError
from tuner.iteration import IterationContext, kind_of, run_training_iteration, start_model
from tuner.model_kinds import CLIP, TEXT, clip_embedder
from tuner.sessions import Action, Session

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NAMES = list(COLOURS)


def click_sessions(per_query: int = 2) -> list[Session]:
    rng = random.Random(0)
    sessions = []
    for _ in range(per_query):
        for name in NAMES:
            hits = rng.sample(NAMES, len(NAMES))
            qid = f"s{len(sessions)}"
            at = T0 + timedelta(minutes=len(sessions))
            action = Action(name, "click", hits.index(name))
            sessions.append(Session(qid, f"{name} swatch", tuple(hits), (action,), at))
    return sessions


@pytest.fixture()
def world(tmp_path):  # type: ignore[no-untyped-def]
    registry = LocalRegistry(tmp_path / "models")
    registry.set_alias("production", register_tiny_clip(registry, tmp_path / "src").version)
    files = write_swatches(tmp_path / "images")
    docs = {name: {"title": f"{name} thing", "image": str(files[name])} for name in NAMES}
    docs["plain"] = {"title": "a document without an image"}
    source = FakeSessions(click_sessions())
    store = BatchStore(tmp_path / "batches")
    context = IterationContext(
        source=source,
        store=store,
        registry=registry,
        documents=FakeDocuments(docs),
        text_fields=["title"],
    )
    released = release_batch(store, source, T0 + timedelta(days=1), timedelta(0))
    return context, released, docs


def settings() -> TunerSettings:
    return TunerSettings(
        batches=BatchSettings(validation_fraction=0.5),
        gate=GateSettings(enabled=False),
        train=TrainSettings(max_steps=2, batch_size=4, learning_rate=1e-4, warmup_ratio=0.0),
    )


@pytest.mark.slow  # ~65 s on 2 shared cores: train, score, export both towers
def test_a_clip_iteration_trains_on_images_and_registers_a_servable_clip(world) -> None:  # type: ignore[no-untyped-def]
    context, released, docs = world
    assert kind_of(context.registry) is CLIP and kind_of(context.registry, "none") is TEXT
    seen: dict[str, object] = {}

    def spy(model, pairs, doc_content, train_settings, progress=True):  # type: ignore[no-untyped-def]
        seen["docs"] = dict(doc_content)
        return CLIP.train(model, pairs, doc_content, train_settings, progress=progress)

    result = run_training_iteration(released, context, settings(), trainer=spy, progress=False)

    assert result.status == "done" and result.start == "production (c1)"
    assert result.best.report.steps == 2 and result.best.report.pairs == result.pairs
    images = {d for d, v in seen["docs"].items() if not isinstance(v, str)}  # type: ignore[attr-defined]
    assert images == set(NAMES)  # every clicked document went in as its image
    assert set(result.live.validation) >= {"ndcg@10", "mrr@10"}

    version = result.version
    assert version is not None and version.kind == "clip" and version.parent == "c1"
    assert (version.path / "clip").is_dir() and context.registry.aliases()["candidate"] == "v1"
    served = load_model_dir(version.path, EncoderSettings())
    assert isinstance(served, OnnxClipEncoder) and served.dimension == 32
    # The next iteration starts from the weights this one registered.
    again = start_model(context.registry, "unused-text-base", "candidate")
    assert again.kind is CLIP and again.parent == "v1" and again.base_model == "tiny-clip"


def test_clip_scoring_embeds_text_queries_against_image_documents(world) -> None:  # type: ignore[no-untyped-def]
    context, _, docs = world
    start = start_model(context.registry, "unused-text-base")
    embed = clip_embedder(start.model)
    local = ImageReader(ImageSettings(), local_paths=True)  # the swatches are local files
    image = load_image(docs["navy"]["image"], local)
    mixed = embed(["navy swatch", image, "crimson swatch"])
    assert mixed.shape == (3, 32) and np.allclose(np.linalg.norm(mixed, axis=1), 1, atol=1e-5)
    assert np.allclose(mixed[1], embed([image])[0], atol=1e-5)
    assert embed([]).shape == (0, 32)
    # The exported model agrees with the torch embedder on both towers (what serving indexes).
    served = load_model_dir(context.registry.get("c1").path, EncoderSettings())
    vectors = embed_documents(served, [docs["navy"], docs["plain"]], IndexSettings(), local)
    assert float(vectors[0] @ mixed[1]) > 0.9999
    assert float(vectors[1] @ embed([docs["plain"]["title"]])[0]) > 0.9999


def test_a_clip_iteration_without_images_has_nothing_to_learn(world) -> None:  # type: ignore[no-untyped-def]
    context, released, _ = world
    context = IterationContext(
        source=context.source,
        store=context.store,
        registry=context.registry,
        documents=FakeDocuments({n: {"title": n} for n in NAMES}),
        text_fields=["title"],
    )
    with pytest.raises(NoTrainingDataError, match="has a positive document with an image"):
        run_training_iteration(released, context, settings(), progress=False)
