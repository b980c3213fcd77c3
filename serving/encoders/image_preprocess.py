"""CLIP image preprocessing with PIL and numpy: what open_clip's eval transform does, sans torch.

open_clip (torchvision) resizes the shorter side to the model's size with PIL (bicubic by
default), center-crops, scales to [0, 1] and normalises with the model's mean and std. The same
steps here give bit-identical pixels, so the image tower's ONNX graph sees what torch saw; the
export parity check (`tuner.export_clip`) holds both sides to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

import numpy as np
from PIL import Image

from serving.errors import ModelLoadError

__all__ = ["ImagePreprocessing"]

_INTERPOLATION = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
_RESIZE_MODES = ("shortest", "squash")


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize, center-crop and normalise images into float32 (3, H, W) arrays."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> ImagePreprocessing:
        """From the `image` section of a CLIP model's clicktune.json; refuses what it can't do."""
        size = meta["size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if meta.get("interpolation", "bicubic") not in _INTERPOLATION:
            raise ModelLoadError(
                f"image interpolation {meta['interpolation']!r} is not supported: "
                f"use one of {sorted(_INTERPOLATION)}"
            )
        if meta.get("resize_mode", "shortest") not in _RESIZE_MODES:
            raise ModelLoadError(
                f"image resize_mode {meta['resize_mode']!r} is not supported: use one of "
                f"{list(_RESIZE_MODES)}"
            )
        return cls(
            height=int(height),
            width=int(width),
            mean=_triple(meta["mean"], "mean"),
            std=_triple(meta["std"], "std"),
            interpolation=meta.get("interpolation", "bicubic"),
            resize_mode=meta.get("resize_mode", "shortest"),
        )

    def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
        """One image (PIL, or uint8 HxWx3 array) -> float32 (3, height, width)."""
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        image = self._resize(image.convert("RGB"))
        raw = np.asarray(self._center_crop(image), dtype=np.float32)  # (H, W, 3)
        mean = np.array(self.mean, dtype=np.float32)
        std = np.array(self.std, dtype=np.float32)
        pixels = (raw / np.float32(255.0) - mean) / std  # (H, W, 3)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)

    def batch(self, images: Sequence[Image.Image | np.ndarray]) -> np.ndarray:
        """Images -> float32 (N, 3, height, width); an image already preprocessed (a float32
        (3, height, width) array from `__call__`) is taken as it is."""
        return np.stack([image if self.done(image) else self(image) for image in images])

    def done(self, image: Image.Image | np.ndarray) -> TypeGuard[np.ndarray]:
        """Whether `image` is already this preprocessing's output (uint8 HxWx3 never is)."""
        shape = (3, self.height, self.width)
        return isinstance(image, np.ndarray) and image.dtype == np.float32 and image.shape == shape

    def _resize(self, image: Image.Image) -> Image.Image:
        resample = _INTERPOLATION[self.interpolation]
        if self.resize_mode == "squash":
            return image.resize((self.width, self.height), resample)
        if self.height != self.width:
            # torchvision's ResizeKeepRatio in open_clip: scale so both sides cover the target.
            scale = max(self.height / image.height, self.width / image.width)
            size = (round(image.width * scale), round(image.height * scale))
            return image.resize(size, resample)
        # torchvision Resize(int): the shorter side becomes `size`, the longer one truncates.
        short, long = sorted((image.width, image.height))
        new_short, new_long = self.height, int(self.height * long / short)
        size = (new_short, new_long) if image.width <= image.height else (new_long, new_short)
        return image if size == image.size else image.resize(size, resample)

    def _center_crop(self, image: Image.Image) -> Image.Image:
        # torchvision center_crop: offsets rounded half to even, after a pad if too small.
        top = int(round((image.height - self.height) / 2.0))
        left = int(round((image.width - self.width) / 2.0))
        return image.crop((left, top, left + self.width, top + self.height))


def _triple(values: Sequence[float], name: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ModelLoadError(f"image {name} {list(values)} must have 3 values (R, G, B)")
    return (float(values[0]), float(values[1]), float(values[2]))
