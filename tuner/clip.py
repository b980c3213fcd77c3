"""Load, build and save open_clip image-text models, with the preprocessing serving must repeat.

Names accepted by `load_clip_model`:

- `"ViT-B-32"` (random weights) or `"ViT-B-32:laion2b_s34b_b79k"` (an open_clip pretrained tag),
- `"hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"`,
- a local folder holding `open_clip_config.json` and weights (what `save_clip_model` writes, and
  what the `clip/` folder of a clicktune CLIP model directory holds: an iteration starts from it).

Hub names need network access the first time. Tests build tiny random-weight models from a config
dict with `build_clip_model`; no weights are ever downloaded there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from tuner.base_models import pick_device
from tuner.errors import ModelLoadError

__all__ = [
    "CLIP_CONFIG_FILE",
    "CLIP_WEIGHTS_DIR",
    "CLIP_WEIGHTS_FILE",
    "ClipModel",
    "build_clip_model",
    "load_clip_model",
    "save_clip_model",
]

CLIP_WEIGHTS_DIR = "clip"  # inside a clicktune model directory, like `st/` for text models
CLIP_CONFIG_FILE = "open_clip_config.json"
CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"


@dataclass
class ClipModel:
    """An open_clip model with its tokenizer and the eval-time image preprocessing."""

    model: Any  # open_clip CLIP (an nn.Module with encode_text / encode_image)
    tokenizer: Any  # open_clip SimpleTokenizer or HFTokenizer: texts -> (N, context_length)
    preprocess: Callable[[Any], Tensor]  # PIL image -> (3, H, W), the torchvision eval transform
    preprocess_cfg: dict[str, Any]  # size, mean, std, interpolation, resize_mode, ...
    model_cfg: dict[str, Any] | None = None  # what open_clip built it from (None: unknown)
    name: str = "clip"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model, "context_length", None) or self.tokenizer.context_length)

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)


def build_clip_model(
    model_cfg: Mapping[str, Any],
    preprocess_cfg: Mapping[str, Any] | None = None,
    device: str = "cpu",
    name: str = "clip-random",
) -> ClipModel:
    """A random-weight open_clip CLIP from a model config dict (tests, or training from scratch)."""
    import open_clip

    cfg = dict(model_cfg)
    try:
        model = open_clip.CLIP(**cfg)
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot build an open_clip CLIP from config {cfg}: {exc}") from exc
    image_size = cfg.get("vision_cfg", {}).get("image_size", 224)
    return _bundle(
        model.to(device).eval(), cfg, {"size": image_size, **(preprocess_cfg or {})}, name
    )


def load_clip_model(name_or_path: str, device: str | None = None) -> ClipModel:
    """An open_clip model by architecture[:pretrained tag], `hf-hub:` name or local folder."""
    import open_clip

    device = pick_device(device)
    model_name, pretrained, model_cfg = _resolve(name_or_path)
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained, device=device)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load open_clip model {name_or_path!r}: it is neither an open_clip "
            f"architecture ({', '.join(open_clip.list_models()[:5])}, ...), optionally with "
            f"':<pretrained tag>', an 'hf-hub:' name, nor a folder with {CLIP_CONFIG_FILE}: {exc}"
        ) from exc
    preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
    clip = _bundle(model.eval(), model_cfg, preprocess_cfg, name_or_path)
    clip.tokenizer = open_clip.get_tokenizer(model_name)
    return clip


def save_clip_model(clip: ClipModel, out_dir: Path) -> Path:
    """Write `open_clip_config.json` + safetensors weights, loadable by `load_clip_model`."""
    from safetensors.torch import save_file

    if clip.model_cfg is None:
        raise ModelLoadError(
            f"cannot save {clip.name!r}: its open_clip model config is unknown, so it could "
            f"not be rebuilt from the saved weights"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": clip.model_cfg, "preprocess_cfg": _jsonable(clip.preprocess_cfg)}
    (out_dir / CLIP_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in clip.model.state_dict().items()}
    save_file(state, str(out_dir / CLIP_WEIGHTS_FILE))
    return out_dir


def _resolve(name_or_path: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """(open_clip model name, pretrained tag, model config if known) for a user's name."""
    import open_clip

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        folder = path / CLIP_WEIGHTS_DIR if (path / CLIP_WEIGHTS_DIR).is_dir() else path
        if not (folder / CLIP_CONFIG_FILE).is_file():
            raise ModelLoadError(f"CLIP model folder {str(path)!r} has no {CLIP_CONFIG_FILE}")
        config = json.loads((folder / CLIP_CONFIG_FILE).read_text())
        return f"local-dir:{folder}", None, config.get("model_cfg")
    if name_or_path.startswith(("hf-hub:", "local-dir:")):
        return name_or_path, None, None
    if name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"CLIP model path {name_or_path!r} is not a directory")
    arch, _, tag = name_or_path.partition(":")
    return arch, tag or None, open_clip.get_model_config(arch)


def _bundle(
    model: nn.Module, model_cfg: Any, preprocess_cfg: Mapping[str, Any], name: str
) -> ClipModel:
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    full = merge_preprocess_dict(PreprocessCfg(), dict(preprocess_cfg))
    cfg = PreprocessCfg(**full)
    context = getattr(model, "context_length", None) or 77
    return ClipModel(
        model=model,
        tokenizer=open_clip.SimpleTokenizer(context_length=context),
        preprocess=image_transform_v2(cfg, is_train=False),
        preprocess_cfg=_jsonable(full),
        model_cfg=dict(model_cfg) if model_cfg is not None else None,
        name=name,
    )


def _jsonable(cfg: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
