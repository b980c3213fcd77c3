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

from serving.config import EncoderSettings, ImageSettings, IndexSettings
from serving.encoders.batcher import MicroBatcher
from serving.encoders.encoder import HashingEncoder, OnnxTextEncoder
from serving.encoders.model_loader import image_tower, load_model_dir, model_kind
from serving.encoders.slot import ModelSlot
from serving.errors import CorpusError, ImageError, ImageProblem, ModelLoadError, SwapRefusedError
from serving.index.doc_images import (
    ImageReader,
    check_image_sources,
    document_images,
    embed_documents,
    load_image,
)
from serving.models.registry import LocalRegistry
from serving.rollout.hotswap import HotSwapper, check_encoder, live_index_kind
from tests.unit.serving.test_image_fetch import claimed_size_png
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


TRUSTED = ImageReader(ImageSettings(), local_paths=True)  # `clicktune index --trust-local-images`


def test_only_a_trusted_reader_reads_paths_and_file_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    red = png(tmp_path / "red.png", (200, 0, 0))
    for value in (str(red), red.as_uri(), data_uri((200, 0, 0))):
        image = load_image(value, TRUSTED)
        assert image.mode == "RGB" and image.getpixel((0, 0)) == (200, 0, 0)
    for value in (str(red), red.as_uri(), f"file://localhost{red}"):  # the API's default
        with pytest.raises(ImageError, match="could not be used: not an allowed source"):
            load_image(value)
    with pytest.raises(ImageError, match="not an allowed source"):
        load_image(f"file://otherhost{red}", TRUSTED)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("/no/such/image.png", "not an allowed source"),
        ("data:image/png;base64,@@@", "is not a decodable image within the limits"),
        ("data:image/png,rawbytes", "is not a decodable image within the limits"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a decod"),
        (42, "not an allowed source"),
        ("  ", "not an allowed source"),
    ],
)
def test_unusable_images_are_refused_with_a_generic_reason(value, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorpusError, match=message):
        load_image(value, TRUSTED)


def noisy_png(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_image_over_the_size_cap_is_refused_naming_the_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = noisy_png(64)
    (tmp_path / "big.png").write_bytes(raw)
    small = ImageSettings(max_bytes=1024)
    for value in (
        str(tmp_path / "big.png"),
        "data:image/png;base64," + base64.b64encode(raw).decode(),
    ):
        with pytest.raises(ImageError, match=r"larger than serving.index.images.max_bytes=1024$"):
            load_image(value, ImageReader(small, local_paths=True))


def bomb_uri(width: int, height: int) -> str:
    return "data:image/png;base64," + base64.b64encode(claimed_size_png(width, height)).decode()


@pytest.mark.parametrize("size", [(5_000, 5_000), (100_000, 100_000)])
def test_a_decompression_bomb_is_refused_before_decoding(size) -> None:  # type: ignore[no-untyped-def]
    # 25 M pixels trip our limit; 10 G pixels trip Pillow's own DecompressionBombError first
    reader = ImageReader(ImageSettings(max_pixels=1_000_000))
    with pytest.raises(ImageError) as caught:
        load_image(bomb_uri(*size), reader)
    assert caught.value.problem is ImageProblem.TOO_MANY_PIXELS
    assert str(caught.value).endswith("more pixels than serving.index.images.max_pixels=1000000")


def test_formats_off_the_list_are_not_decoded() -> None:
    with pytest.raises(ImageError, match="not a decodable image"):
        load_image(data_uri((1, 2, 3)), ImageReader(ImageSettings(formats=["jpeg"])))


def test_clip_embeds_image_documents_by_image_and_the_rest_by_text(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clip = FakeClip()
    docs = [
        {"_id": "a", "title": "red shoe", "image": str(png(tmp_path / "r.png", (250, 0, 0)))},
        {"_id": "b", "title": "plain text document"},
        {"_id": "c", "title": "blue", "image": data_uri((0, 0, 250))},
    ]
    # Behind the micro-batcher, as `clicktune serve` wraps every encoder.
    served = MicroBatcher(clip, window_ms=0.0)
    vectors = embed_documents(served, docs, IndexSettings(), TRUSTED)
    assert vectors.shape == (3, 8) and clip.images_seen == 2
    assert np.allclose(vectors[0], clip.encode_images([load_image(docs[0]["image"], TRUSTED)])[0])
    assert np.allclose(vectors[2], clip.encode_images([load_image(docs[2]["image"])])[0])
    assert np.allclose(vectors[1], clip.encode(["plain text document"])[0])
    assert not np.allclose(vectors[0], clip.encode(["red shoe"])[0])
    # The API's reader refuses the path, naming the document and nothing of the cause
    with pytest.raises(ImageError) as caught:
        embed_documents(served, docs, IndexSettings())
    assert str(caught.value) == "image of document 'a' could not be used: not an allowed source"


def test_images_are_decoded_and_embedded_one_bounded_batch_at_a_time() -> None:
    docs = [{"_id": str(i), "image": data_uri((i * 20, 0, 0))} for i in range(5)]
    docs.insert(2, {"_id": "text", "title": "no image"})
    settings = IndexSettings(images=ImageSettings(decode_batch=2))
    clip, plain = PreprocessingClip(), FakeClip()
    vectors = embed_documents(clip, docs, settings)
    assert clip.batches == [2, 2, 1]  # never more than decode_batch images held at once
    assert all(kind == "preprocessed" for kind in clip.kinds)  # full-size images freed early
    assert np.allclose(vectors, embed_documents(plain, docs, IndexSettings()))


class PreprocessingClip(FakeClip):
    """A tower with `preprocess` (as OnnxClipEncoder): gets small arrays, not decoded images."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.kinds: list[str] = []

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(image, dtype=np.float32)[:1, :1]  # (1, 1, 3): only the mean colour

    def encode_images(self, images: list) -> np.ndarray:  # type: ignore[type-arg]
        self.batches.append(len(images))
        self.kinds += ["preprocessed" if isinstance(i, np.ndarray) else "image" for i in images]
        return super().encode_images(images)


def test_the_api_refuses_image_fields_it_could_never_read_under_any_model() -> None:
    # A text model ignores images, but a later CLIP reindex reads what is stored now
    ok = [{"_id": "a", "image": data_uri((1, 1, 1))}, {"_id": "b", "title": "none"}]
    check_image_sources(ok, IndexSettings())
    for value in ("/etc/passwd", "file:///etc/passwd", "http://169.254.169.254/latest"):
        with pytest.raises(ImageError, match="document 'x' could not be used: not an allowed"):
            check_image_sources([{"_id": "x", "image": value}], IndexSettings())
    check_image_sources([{"_id": "x", "image": "/etc/passwd"}], IndexSettings(image_field=None))


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
