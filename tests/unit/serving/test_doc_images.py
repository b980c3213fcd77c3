"""Documents with images: the loader factory, image reading, which tower embeds which document,
and the hot-swap refusal of a model kind the live index cannot take (no torch needed)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from serving.batcher import MicroBatcher
from serving.config import EncoderSettings, IndexSettings
from serving.doc_images import document_images, embed_documents, load_image
from serving.encoder import HashingEncoder, OnnxTextEncoder
from serving.errors import CorpusError, ModelLoadError, SwapRefusedError
from serving.hotswap import HotSwapper, check_encoder, live_index_kind
from serving.model_loader import image_tower, load_model_dir, model_kind
from serving.registry import LocalRegistry
from serving.slot import ModelSlot
from tests.unit.serving.tiny_model import build_tiny_model

PROBES = ["wing lift", "x"]


class FakeClip(HashingEncoder):
    """Texts by hashing; an image becomes the unit vector of its mean colour (first 3 dims)."""

    def __init__(self, dimension: int = 8, version: str = "clip1", broken: bool = False) -> None:
        super().__init__(dimension, version)
        self.images_seen = 0
        self.broken = broken

    def encode_images(self, images: list) -> np.ndarray:  # type: ignore[type-arg]
        self.images_seen += len(images)
        out = np.zeros((len(images), self.dimension), dtype=np.float32)
        for row, image in enumerate(images):
            out[row, :3] = np.asarray(image, dtype=np.float32).reshape(-1, 3).mean(axis=0) + 1
        if self.broken:
            return out  # not normalised
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def png(path: Path, rgb: tuple[int, int, int]) -> Path:
    Image.new("RGB", (12, 10), rgb).save(path)
    return path


def data_uri(rgb: tuple[int, int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_images_load_from_a_path_a_file_url_and_a_data_uri(tmp_path) -> None:  # type: ignore[no-untyped-def]
    red = png(tmp_path / "red.png", (200, 0, 0))
    for value in (str(red), red.as_uri(), data_uri((200, 0, 0))):
        image = load_image(value)
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (200, 0, 0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/no/such/image.png", "neither a file, a URL nor a data: URI"),
        ("data:image/png;base64,@@@", "invalid base64"),
        ("data:image/png,rawbytes", "must be base64"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a readable"),
        (42, "must be a non-empty string"),
    ],
)
def test_unreadable_images_are_refused_with_the_value(value, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorpusError, match=message):
        load_image(value)


def test_an_image_over_the_size_cap_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    big = png(tmp_path / "big.png", (1, 2, 3))
    with pytest.raises(CorpusError, match="exceeds max_image_bytes=10"):
        load_image(str(big), max_bytes=10)


def test_clip_embeds_image_documents_by_image_and_the_rest_by_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = FakeClip()
    docs = [
        {"_id": "a", "title": "red shoe", "image": str(png(tmp_path / "r.png", (250, 0, 0)))},
        {"_id": "b", "title": "plain text document"},
        {"_id": "c", "title": "blue", "image": data_uri((0, 0, 250))},
    ]
    # Behind the micro-batcher, as `clicktune serve` wraps every encoder.
    served = MicroBatcher(clip, window_ms=0.0)
    vectors = embed_documents(served, docs, IndexSettings())
    assert vectors.shape == (3, 8) and clip.images_seen == 2
    assert np.allclose(vectors[0], clip.encode_images([load_image(docs[0]["image"])])[0])
    assert np.allclose(vectors[2], clip.encode_images([load_image(docs[2]["image"])])[0])
    assert np.allclose(vectors[1], clip.encode(["plain text document"])[0])
    assert not np.allclose(vectors[0], clip.encode(["red shoe"])[0])


def test_a_text_model_or_no_image_field_ignores_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    docs = [{"_id": "a", "title": "red shoe", "image": "/not/read/at/all.png"}]
    text = HashingEncoder(8)
    assert np.allclose(embed_documents(text, docs, IndexSettings()), text.encode(["red shoe"]))
    clip = FakeClip()
    vectors = embed_documents(clip, docs, IndexSettings(image_field=None))
    assert clip.images_seen == 0 and np.allclose(vectors, clip.encode(["red shoe"]))


def test_document_images_maps_ids_to_loaded_images(tmp_path) -> None:  # type: ignore[no-untyped-def]
    docs = {"a": {"image": data_uri((9, 9, 9))}, "b": {"title": "no image"}}
    images = document_images(docs, IndexSettings())
    assert list(images) == ["a"] and images["a"].getpixel((1, 1)) == (9, 9, 9)


def _meta_dir(path: Path, kind: str, dimension: int = 8) -> Path:
    path.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):
        (path / name).write_text("")
    meta = {"format": 1, "kind": kind, "version": path.name, "dimension": dimension}
    (path / "clicktune.json").write_text(json.dumps({**meta, "max_length": 16}))
    return path


def test_the_loader_picks_the_encoder_class_from_the_directory_kind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    build_tiny_model(tmp_path / "text")
    encoder = load_model_dir(tmp_path / "text", EncoderSettings())
    assert isinstance(encoder, OnnxTextEncoder) and model_kind(encoder) == "text"
    # A CLIP directory goes to the CLIP loader, which wants its image tower.
    with pytest.raises(ModelLoadError, match="CLIP metadata needs an .image. section"):
        load_model_dir(_meta_dir(tmp_path / "clip", "clip"), EncoderSettings())
    with pytest.raises(ModelLoadError, match="kind 'audio' is not servable"):
        load_model_dir(_meta_dir(tmp_path / "audio", "audio"), EncoderSettings())


def test_image_tower_is_found_behind_wrappers_only_when_there_is_one() -> None:
    clip = FakeClip()
    assert image_tower(MicroBatcher(MicroBatcher(clip))) is clip
    assert image_tower(MicroBatcher(HashingEncoder())) is None


def test_a_broken_image_tower_is_refused_by_the_swap_checks() -> None:
    check_encoder(FakeClip(), PROBES, 8)
    with pytest.raises(SwapRefusedError, match="image vectors of norm"):
        check_encoder(FakeClip(broken=True), PROBES, 8)


class FakeDocIndex:
    def __init__(self, live: str | None) -> None:
        self.live = live
        self.settings = IndexSettings(prefix="docs")

    def live_index(self) -> str | None:
        return self.live


def test_swapping_to_another_kind_is_refused_unless_it_is_a_reindex(tmp_path) -> None:  # type: ignore[no-untyped-def]
    registry = LocalRegistry(tmp_path / "models")
    registry.add(_meta_dir(tmp_path / "src" / "t1", "text"), "t1")
    registry.add(_meta_dir(tmp_path / "src" / "c1", "clip"), "c1")
    live = FakeDocIndex("docs__t1__1")
    assert live_index_kind(live, registry) == "text"  # type: ignore[arg-type]
    assert live_index_kind(FakeDocIndex(None), registry) is None  # type: ignore[arg-type]
    assert live_index_kind(FakeDocIndex("docs__gone__1"), registry) is None  # type: ignore[arg-type]

    slot = ModelSlot(HashingEncoder(8, "t1"))
    encoders = {"t1": HashingEncoder(8, "t1"), "c1": FakeClip(8, "c1")}
    swapper = HotSwapper(
        slot,
        registry,
        lambda path: encoders[path.name],
        PROBES,
        expected_dimension=lambda: 8,
        expected_kind=lambda: live_index_kind(live, registry),  # type: ignore[arg-type]
    )
    with pytest.raises(SwapRefusedError, match="'clip' model but the live index holds vectors"):
        swapper.swap_to("c1")
    assert slot.version == "t1" and "c1" in swapper.last_refusal["reason"]  # type: ignore[index]
    assert swapper.swap_to("c1", reindex=True).version == "c1"
    assert image_tower(slot.current) is encoders["c1"]
