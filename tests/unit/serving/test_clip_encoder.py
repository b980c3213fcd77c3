"""The torch-free half of CLIP serving: image preprocessing and the model-directory checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from serving.config import EncoderSettings
from serving.encoders.clip_encoder import OnnxClipEncoder
from serving.encoders.image_preprocess import ImagePreprocessing
from serving.errors import ModelLoadError

META = {"size": 4, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def test_shorter_side_is_resized_then_the_centre_is_cropped_and_normalised() -> None:
    # A wide image: left third black, middle third white, right third black.
    pixels = np.zeros((4, 12, 3), dtype=np.uint8)
    pixels[:, 4:8] = 255
    out = ImagePreprocessing.from_meta({**META, "interpolation": "nearest"})(pixels)
    assert out.shape == (3, 4, 4) and out.dtype == np.float32
    # Nothing to resize (height already 4); the centre 4 columns are the white band.
    assert np.allclose(out, (1.0 - 0.5) / 0.25)


def test_grey_pixels_normalise_with_the_models_mean_and_std() -> None:
    image = Image.new("RGB", (9, 6), (51, 102, 153))
    out = ImagePreprocessing.from_meta(META)(image)
    expected = (np.array([51, 102, 153]) / 255.0 - 0.5) / 0.25
    assert np.allclose(out[:, 0, 0], expected, atol=1e-6)


def test_a_batch_takes_already_preprocessed_images_as_they_are() -> None:
    # What OnnxClipEncoder.preprocess hands back: doc_images frees the full image after it
    prep = ImagePreprocessing.from_meta(META)
    images = [Image.new("RGB", (9, 6), (51, 102, 153)), Image.new("RGB", (5, 5), (0, 9, 0))]
    small = [prep(image) for image in images]
    assert prep.done(small[0]) and not prep.done(np.zeros((3, 4, 4), dtype=np.uint8))
    assert np.array_equal(prep.batch(small), prep.batch(images))
    assert np.array_equal(prep.batch([small[0], images[1]]), prep.batch(images))


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({**META, "resize_mode": "longest"}, "resize_mode 'longest' is not supported"),
        ({**META, "interpolation": "lanczos"}, "interpolation 'lanczos' is not supported"),
        ({**META, "mean": [0.5, 0.5]}, r"mean \[0.5, 0.5\] must have 3 values"),
    ],
)
def test_preprocessing_serving_cannot_repeat_is_refused(meta, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError, match=message):
        ImagePreprocessing.from_meta(meta)


def test_a_text_model_directory_is_not_loaded_as_clip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("model.onnx", "tokenizer.json"):
        (tmp_path / name).write_text("")
    meta = {"format": 1, "kind": "text", "version": "v1", "dimension": 8, "max_length": 16}
    (tmp_path / "clicktune.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="kind 'text' is not a CLIP model"):
        OnnxClipEncoder.from_dir(tmp_path, EncoderSettings())
