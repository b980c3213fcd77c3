"""Export both towers of an open_clip model to the CLIP model directory that serving reads.

The directory (see `serving.encoders.clip_encoder`) holds `model.onnx` (text tower), `image.onnx`
(image tower), `tokenizer.json` (open_clip's BPE tokenizer rebuilt for the `tokenizers` library),
`clicktune.json` (kind "clip", with the image preprocessing) and `clip/` (the torch weights, so
the next iteration can start from this model). Each tower is checked against torch through the
serving encoder itself: texts through tokenizer.json, images through the PIL preprocessing; below
the cosine threshold nothing is written to `clicktune.json` and `ExportParityError` is raised.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.clip_encoder import IMAGE_FILE, IMAGE_OUTPUT, TEXT_OUTPUT, OnnxClipEncoder
from tuner import progress
from tuner.clip import CLIP_WEIGHTS_DIR, ClipModel, save_clip_model
from tuner.errors import ExportError, ExportParityError
from tuner.export import (
    FORMAT,
    METADATA_FILE,
    ONNX_FILE,
    TOKENIZER_FILE,
    ExportReport,
    quiet_tracing,
)
from tuner.parity_texts import parity_texts

__all__ = ["clip_tokenizer_json", "export_clip_model", "parity_images"]


class _TextTower(nn.Module):
    """input_ids (B, S <= context) -> padded to the context -> encode_text -> L2 normalise.

    CLIP's text tower has a positional embedding of fixed length and a causal mask, so padding
    after the end token changes nothing: serving may send any S up to the context length.
    """

    def __init__(self, model: Any, context_length: int, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.context_length = context_length
        self.pad_id = pad_id

    def forward(self, input_ids: Tensor) -> Tensor:
        padded = F.pad(input_ids, (0, self.context_length - input_ids.shape[1]), value=self.pad_id)
        return F.normalize(self.model.encode_text(padded), dim=-1)  # (B, D)


class _ImageTower(nn.Module):
    """pixel_values (B, 3, H, W), already preprocessed -> encode_image -> L2 normalise."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: Tensor) -> Tensor:
        return F.normalize(self.model.encode_image(pixel_values), dim=-1)  # (B, D)


def export_clip_model(
    clip: ClipModel,
    out_dir: Path,
    *,
    version: str,
    parent: str | None,
    base_model: str,
    metrics: Mapping[str, Any] | None = None,
    held_out_texts: Sequence[str] | None = None,
    held_out_images: Sequence[Image.Image] | None = None,
    min_cosine: float = 0.9999,
    opset_version: int = 17,
) -> ExportReport:
    """Write the CLIP model directory for `clip` into `out_dir` and check both towers."""
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    clip.model.to("cpu").eval()
    tokenizer, pad_id = clip_tokenizer_json(clip)
    tokenizer.save(str(out_dir / TOKENIZER_FILE))
    # steps: both ONNX towers, torch weights, parity of both towers
    with progress.stage("export", "step", 3) as steps:
        _export_towers(clip, out_dir, pad_id, opset_version)
        steps.advance(last="onnx")
        save_clip_model(clip, out_dir / CLIP_WEIGHTS_DIR)
        steps.advance(last="weights")
        metadata = _metadata(clip, version, parent, base_model, metrics, pad_id)
        texts = list(held_out_texts) if held_out_texts else parity_texts()
        images = list(held_out_images) if held_out_images else parity_images()
        text_cos, image_cos = _parity(clip, out_dir, metadata, texts, images)
        steps.advance(last="parity", min_cosine=f"{min(text_cos, image_cos):.6f}")
    cosine = min(text_cos, image_cos)
    if cosine < min_cosine:
        raise ExportParityError(cosine, min_cosine)
    metadata["parity_min_cosine"] = round(cosine, 7)
    metadata["parity"] = {"text": round(text_cos, 7), "image": round(image_cos, 7)}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    graphs = (ONNX_FILE, IMAGE_FILE)
    return ExportReport.written(out_dir, metadata, cosine=cosine, started=started, graphs=graphs)


def clip_tokenizer_json(clip: ClipModel) -> tuple[Any, int]:
    """open_clip's tokenizer as a `tokenizers.Tokenizer`, and the id the graph pads with."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    tokenizer = clip.tokenizer
    if isinstance(tokenizer, HFTokenizer):
        backend = tokenizer.tokenizer.backend_tokenizer
        pad = tokenizer.tokenizer.pad_token_id
        return backend, int(pad or 0)
    if not isinstance(tokenizer, SimpleTokenizer):
        raise ExportError(
            f"cannot save the tokenizer {type(tokenizer).__name__} of {clip.name!r} as "
            f"tokenizer.json: only open_clip's SimpleTokenizer and HFTokenizer are supported"
        )
    return _simple_tokenizer_json(tokenizer), 0  # open_clip pads SimpleTokenizer ids with 0


def _simple_tokenizer_json(simple: Any) -> Any:
    """Rebuild open_clip's byte-level BPE (vocab, merges, </w> suffix, start/end tokens)."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    tokenizer = Tokenizer(
        BPE(vocab=dict(simple.encoder), merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    )
    # open_clip also runs ftfy and html-unescapes; ordinary text is unaffected.
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    split = Regex(
        r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
        r"""[^\s\p{L}\p{N}]+"""
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(split, behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    start, end = simple.sot_token_id, simple.eot_token_id
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>",
        special_tokens=[("<start_of_text>", start), ("<end_of_text>", end)],
    )
    return tokenizer


def parity_images(count: int = 6, seed: int = 0) -> list[Image.Image]:
    """Random RGB images of assorted sizes and aspect ratios (square, wide, tall, tiny)."""
    rng = np.random.default_rng(seed)
    sizes = [(32, 32), (48, 40), (40, 64), (100, 75), (17, 23), (224, 224)]
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in (sizes[i % len(sizes)] for i in range(count))
    ]


def _export_towers(clip: ClipModel, out_dir: Path, pad_id: int, opset_version: int) -> None:
    context = clip.context_length
    ids = clip.tokenizer(["an example query", "a"])[:, : min(8, context)]  # (2, S)
    size = clip.preprocess_cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size
    pixels = torch.zeros(2, 3, height, width)
    _export(
        _TextTower(clip.model, context, pad_id),
        ids,
        out_dir / ONNX_FILE,
        ("input_ids", TEXT_OUTPUT, {0: "batch", 1: "sequence"}),
        opset_version,
    )
    _export(
        _ImageTower(clip.model),
        pixels,
        out_dir / IMAGE_FILE,
        ("pixel_values", IMAGE_OUTPUT, {0: "batch"}),
        opset_version,
    )


def _export(
    tower: nn.Module,
    sample: Tensor,
    path: Path,
    names: tuple[str, str, dict[int, str]],
    opset_version: int,
) -> None:
    input_name, output_name, axes = names
    # nn.MultiheadAttention's inference fast path is a fused op ONNX has no export for.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with quiet_tracing():
            torch.onnx.export(
                tower,
                (sample,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: axes, output_name: {0: "batch"}},
                opset_version=opset_version,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many unrelated types
        raise ExportError(f"torch.onnx.export to {str(path)!r} failed: {exc}") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _parity(
    clip: ClipModel,
    out_dir: Path,
    metadata: Mapping[str, Any],
    texts: Sequence[str],
    images: Sequence[Image.Image],
) -> tuple[float, float]:
    """Min cosine per tower between torch (open_clip's own tokenizer and transform) and serving."""
    # onnxruntime: the graph file is what is checked; serving's runtimes are checked against it.
    settings = EncoderSettings(batch_size=8, runtime=EncoderRuntime.onnxruntime)
    served = OnnxClipEncoder.from_files(out_dir, metadata, settings)
    with torch.no_grad():
        tokens = clip.tokenizer(list(texts))  # (N, context)
        text_ref = F.normalize(clip.model.encode_text(tokens), dim=-1).numpy()
        pixels = torch.stack([clip.preprocess(image) for image in images])  # (M, 3, H, W)
        image_ref = F.normalize(clip.model.encode_image(pixels), dim=-1).numpy()
    text_cos = np.sum(served.encode(list(texts)) * text_ref, axis=1)  # (N,)
    image_cos = np.sum(served.encode_images(list(images)) * image_ref, axis=1)  # (M,)
    return float(text_cos.min()), float(image_cos.min())


def _metadata(
    clip: ClipModel,
    version: str,
    parent: str | None,
    base_model: str,
    metrics: Mapping[str, Any] | None,
    pad_id: int,
) -> dict[str, Any]:
    with torch.no_grad():
        dimension = clip.model.encode_text(clip.tokenizer(["a"])).shape[-1]
    keys = ("size", "mean", "std", "interpolation", "resize_mode")
    return {
        "format": FORMAT,
        "kind": "clip",
        "version": version,
        "dimension": int(dimension),
        "max_length": clip.context_length,
        "pad_id": pad_id,
        "image": {k: clip.preprocess_cfg[k] for k in keys},
        "base_model": base_model,
        "parent": parent,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "metrics": dict(metrics or {}),
    }
