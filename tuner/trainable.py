"""Choose which weights a fine-tune moves: all, LoRA adapters (peft), or all but the lowest layers.

`trainable_text_model` and `trainable_clip_model` are context managers around a training loop:
on entry they wrap the network in LoRA adapters and/or freeze the embeddings and the first
`freeze_layers` transformer layers; they yield the parameters the optimizer should get. On exit
the adapters are merged into the plain weights and every `requires_grad` flag is restored, so
what leaves the loop is the same architecture that came in and the ONNX export never changes.
`method: query_adapter` moves none of the model's weights (tuner/query_adapter.py trains it):
both refuse it, so a loop never runs a full fine-tune in its place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import nn

from tuner.config import TrainMethod, TrainSettings
from tuner.errors import TrainConfigError

__all__ = [
    "CLIP_LORA_TARGETS",
    "freeze_clip_layers",
    "freeze_text_layers",
    "trainable_clip_model",
    "trainable_text_model",
]

# open_clip's attention is nn.MultiheadAttention, whose out_proj peft cannot wrap safely
# (the functional attention reads its weight directly): adapt the MLPs instead.
CLIP_LORA_TARGETS = ("c_fc", "c_proj")


@contextmanager
def trainable_text_model(model: Any, settings: TrainSettings) -> Iterator[list[nn.Parameter]]:
    """Prepare a SentenceTransformer's transformer (`model[0].auto_model`) for training."""
    with _trainable(model, model[0].auto_model, settings, None, freeze_text_layers) as params:
        yield params


@contextmanager
def trainable_clip_model(model: nn.Module, settings: TrainSettings) -> Iterator[list[nn.Parameter]]:
    """Prepare an open_clip model for training; yields its trainable parameters."""
    with _trainable(model, model, settings, CLIP_LORA_TARGETS, freeze_clip_layers) as params:
        yield params


@contextmanager
def _trainable(
    root: nn.Module,
    network: nn.Module,
    settings: TrainSettings,
    default_targets: Sequence[str] | None,
    freeze: Callable[[nn.Module, int], list[nn.Parameter]],
) -> Iterator[list[nn.Parameter]]:
    # peft injects the adapters into `network` in place (the wrapper it returns is only needed
    # to merge them), so `root` trains through them without being rewired.
    if settings.method in (TrainMethod.query_adapter, TrainMethod.query_tower):
        raise TrainConfigError(
            f"method {settings.method.value} trains a query side over the frozen model, never the "
            "model's own weights: use tuner.query_adapter.fine_tune_query_adapter or "
            "tuner.query_tower.fine_tune_query_tower, not a fine-tune loop"
        )
    flags = [(p, p.requires_grad) for p in root.parameters()]
    peft_model = (
        _with_lora(network, settings, default_targets)
        if settings.method == TrainMethod.lora
        else None
    )
    freeze(network, settings.freeze_layers)
    try:
        yield [p for p in root.parameters() if p.requires_grad]
    finally:
        if peft_model is not None:
            peft_model.merge_and_unload()  # back to plain layers, in place
        for param, flag in flags:
            param.requires_grad_(flag)


def _with_lora(
    network: nn.Module, settings: TrainSettings, default_targets: Sequence[str] | None
) -> Any:
    """`network` wrapped in peft LoRA adapters; only the adapters stay trainable."""
    from peft import LoraConfig, get_peft_model

    targets = settings.lora_target_modules or (list(default_targets) if default_targets else None)
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
    )
    try:
        return get_peft_model(network, config)
    except ValueError as exc:  # peft: target modules not found, or no default for the model
        raise TrainConfigError(
            f"cannot add LoRA adapters to {type(network).__name__} with lora_target_modules "
            f"{targets}: {exc}"
        ) from exc


def freeze_text_layers(transformer: nn.Module, count: int) -> list[nn.Parameter]:
    """Freeze a Hugging Face encoder's embeddings and its first `count` layers."""
    if count == 0:
        return []
    layers = _layer_stack(transformer)
    _check_depth(transformer, count, len(layers))
    model: Any = transformer
    embeddings = getattr(model, "embeddings", None) or model.get_input_embeddings()
    return _freeze([embeddings, *layers[:count]])


def freeze_clip_layers(model: nn.Module, count: int) -> list[nn.Parameter]:
    """Freeze both open_clip towers' embeddings and the first `count` residual blocks of each."""
    if count == 0:
        return []
    frozen: list[nn.Parameter] = []
    for tower, embedding_names in (
        (model, ("token_embedding", "positional_embedding")),
        (_attr(model, "visual"), ("conv1", "class_embedding", "positional_embedding", "ln_pre")),
    ):
        blocks = _attr(_attr(tower, "transformer"), "resblocks")
        _check_depth(tower, count, len(blocks))
        frozen += _freeze([_attr(tower, n) for n in embedding_names if _has(tower, n)])
        frozen += _freeze(list(blocks[:count]))
    return frozen


def _layer_stack(transformer: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers: the ModuleList of `num_hidden_layers` blocks."""
    depth = getattr(getattr(transformer, "config", None), "num_hidden_layers", None)
    stacks = [m for m in transformer.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matching = [s for s in stacks if depth is None or len(s) == depth]
    if not matching:
        raise TrainConfigError(
            f"cannot find the transformer layers of {type(transformer).__name__} "
            f"(config.num_hidden_layers={depth}) to freeze"
        )
    return matching[0]


def _check_depth(module: nn.Module, count: int, depth: int) -> None:
    if count > depth:
        raise TrainConfigError(
            f"freeze_layers {count} exceeds the {depth} transformer layers of "
            f"{type(module).__name__}; it must be <= {depth}"
        )


def _freeze(parts: Sequence[nn.Module | nn.Parameter]) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for part in parts:
        params += [part] if isinstance(part, nn.Parameter) else list(part.parameters())
    for param in params:
        param.requires_grad_(False)
    return params


def _has(module: nn.Module, name: str) -> bool:
    return getattr(module, name, None) is not None


def _attr(module: nn.Module, name: str) -> Any:
    value = getattr(module, name, None)
    if value is None:
        raise TrainConfigError(f"{type(module).__name__} has no {name!r}: not an open_clip CLIP")
    return value
