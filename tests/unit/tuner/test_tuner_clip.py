"""A tiny random-weight open_clip CLIP: trains, exports both towers, passes parity in serving."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from serving.config import EncoderSettings
from serving.encoders.clip_encoder import OnnxClipEncoder
from serving.encoders.image_preprocess import ImagePreprocessing
from tuner.clip import ClipModel, build_clip_model, load_clip_model
from tuner.config import TrainMethod, TrainSettings
from tuner.errors import ModelLoadError, TrainConfigError
from tuner.export_clip import clip_tokenizer_json, export_clip_model, parity_images
from tuner.losses.clip_symmetric import WeightedSymmetricClipLoss
from tuner.pairs import TrainingPair
from tuner.parity_texts import parity_texts
from tuner.train_clip import fine_tune_clip

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
COLOURS = {
    "crimson": (220, 20, 60),
    "forest": (34, 139, 34),
    "navy": (0, 0, 128),
    "gold": (255, 215, 0),
    "teal": (0, 128, 128),
    "orchid": (218, 112, 214),
    "sienna": (160, 82, 45),
    "slate": (112, 128, 144),
}
QUERIES = [f"{name} swatch" for name in COLOURS]


def swatch(rgb: tuple[int, int, int], seed: int) -> Image.Image:
    noise = np.random.default_rng(seed).integers(-20, 21, (40, 48, 3))
    return Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8))


IMAGES = {f"img{i}": swatch(rgb, i) for i, rgb in enumerate(COLOURS.values())}
PAIRS = [
    TrainingPair(q, f"img{i}", 1.0 + i % 3, (f"img{(i + 1) % 8}",)) for i, q in enumerate(QUERIES)
]


@pytest.fixture()
def clip() -> ClipModel:
    torch.manual_seed(0)
    return build_clip_model(TINY)


def full_batch_loss(clip: ClipModel) -> float:
    with torch.no_grad():
        texts = clip.model.encode_text(clip.tokenizer(QUERIES))
        images = clip.model.encode_image(
            torch.stack([clip.preprocess(IMAGES[p.positive_id]) for p in PAIRS])
        )
        weights = torch.tensor([p.weight for p in PAIRS])
        return WeightedSymmetricClipLoss()(texts, images, weights, clip.model.logit_scale).item()


def test_a_few_steps_lower_the_loss_then_both_towers_export_with_parity(clip, tmp_path) -> None:  # type: ignore[no-untyped-def]
    before = full_batch_loss(clip)
    settings = TrainSettings(batch_size=8, max_steps=8, learning_rate=1e-3, warmup_ratio=0.0)
    report = fine_tune_clip(clip, PAIRS, IMAGES, settings, progress=False)
    after = full_batch_loss(clip)
    print(f"\nclip: {report.pairs_per_s} pairs/s, loss {before:.3f} -> {after:.3f}")
    assert report.steps == 8 and report.pairs == 8
    assert after < before * 0.8

    exported = export_clip_model(clip, tmp_path / "m", version="c1", parent=None, base_model="tiny")
    print(f"clip export: parity {exported.metadata['parity']}, {exported.seconds} s")
    assert exported.parity_min_cosine >= 0.9999 and exported.dimension == 32
    graphs = [tmp_path / "m" / name for name in ("model.onnx", "image.onnx")]
    assert exported.onnx_bytes == sum(graph.stat().st_size for graph in graphs)  # both towers
    meta = json.loads((tmp_path / "m" / "clicktune.json").read_text())
    assert (
        meta["kind"] == "clip"
        and meta["max_length"] == 16
        and meta["image"]["size"] in (32, [32, 32])
    )

    # What serving does, on batches and lengths the export never saw.
    served = OnnxClipEncoder.from_dir(tmp_path / "m", EncoderSettings(batch_size=3))
    texts = ["navy", "a much longer query about a crimson swatch with many words in it", ""] * 2
    with torch.no_grad():
        reference = F.normalize(clip.model.encode_text(clip.tokenizer(texts)), dim=-1).numpy()
        pixels = torch.stack([clip.preprocess(image) for image in IMAGES.values()])
        image_ref = F.normalize(clip.model.encode_image(pixels), dim=-1).numpy()
    assert np.min(np.sum(served.encode(texts) * reference, axis=1)) >= 0.9999
    vectors = served.encode_images(list(IMAGES.values()))
    assert vectors.shape == (8, 32) and np.min(np.sum(vectors * image_ref, axis=1)) >= 0.9999

    # The torch weights saved beside the graphs are where the next iteration starts from.
    reloaded = load_clip_model(str(tmp_path / "m"), device="cpu")
    with torch.no_grad():
        again = F.normalize(reloaded.model.encode_text(reloaded.tokenizer(texts)), dim=-1)
    assert np.allclose(again.numpy(), reference, atol=1e-5)


def test_tokenizer_json_gives_open_clip_token_ids(clip) -> None:  # type: ignore[no-untyped-def]
    tokenizer, pad_id = clip_tokenizer_json(clip)
    tokenizer.enable_truncation(16)
    texts = [*parity_texts(), "Don't   stop: C++ & Rust, 50% off!", "café naïve"]
    expected = [[t for t in row.tolist() if t != pad_id] for row in clip.tokenizer(texts)]
    assert [e.ids for e in tokenizer.encode_batch(texts)] == expected


def test_serving_preprocessing_matches_open_clips_transform(clip) -> None:  # type: ignore[no-untyped-def]
    preprocess = ImagePreprocessing.from_meta(clip.preprocess_cfg)
    for image in parity_images():
        ours = preprocess(image)
        theirs = clip.preprocess(image).numpy()
        assert ours.shape == theirs.shape == (3, 32, 32)
        assert np.allclose(ours, theirs, atol=1e-5), image.size


def test_lora_on_clip_trains_adapters_then_leaves_a_plain_model(clip) -> None:  # type: ignore[no-untyped-def]
    before = {n: p.detach().clone() for n, p in clip.model.named_parameters()}
    settings = TrainSettings(
        batch_size=8, max_steps=2, learning_rate=1e-3, warmup_ratio=0.0, method=TrainMethod.lora
    )
    fine_tune_clip(clip, PAIRS, IMAGES, settings, progress=False)
    after = dict(clip.model.named_parameters())
    assert after.keys() == before.keys()
    moved = {n for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    assert moved and all(n.endswith(("c_fc.weight", "c_proj.weight")) for n in moved)


def test_frozen_clip_layers_stay_bit_identical(clip) -> None:  # type: ignore[no-untyped-def]
    before = {n: p.detach().clone() for n, p in clip.model.named_parameters()}
    settings = TrainSettings(
        batch_size=8, max_steps=2, learning_rate=1e-3, warmup_ratio=0.0, freeze_layers=1
    )
    fine_tune_clip(clip, PAIRS, IMAGES, settings, progress=False)
    params = dict(clip.model.named_parameters())
    frozen = [n for n in before if "resblocks.0." in n or "embedding" in n or "conv1" in n]
    assert frozen and all(torch.equal(params[n], before[n]) for n in frozen)
    assert not torch.equal(
        params["transformer.resblocks.1.mlp.c_fc.weight"],
        before["transformer.resblocks.1.mlp.c_fc.weight"],
    )
    with pytest.raises(TrainConfigError, match="freeze_layers 3 exceeds the 2"):
        fine_tune_clip(clip, PAIRS, IMAGES, settings.model_copy(update={"freeze_layers": 3}), False)


def test_unknown_clip_names_and_paths_are_clear_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError, match="no open_clip_config.json"):
        load_clip_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_clip_model("./no/such/clip")
