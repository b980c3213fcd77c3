"""Hot swap: probe checks, refusals that keep the old model, promote/rollback, followers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from serving.encoders.encoder import HashingEncoder
from serving.encoders.slot import ModelSlot
from serving.errors import RegistryError, SwapRefusedError
from serving.models.registry import LocalRegistry
from serving.rollout.hotswap import HotSwapper, check_encoder
from serving.rollout.replicas import ControlListener, RegistryPoller, model_changed

PROBES = ["wing lift", "boundary layer", "x"]


class Broken(HashingEncoder):
    """A HashingEncoder whose output is spoiled in a chosen way."""

    def __init__(self, fault: str, dimension: int = 16, version: str = "bad") -> None:
        super().__init__(dimension, version)
        self.fault = fault
        self.calls = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = super().encode(texts)
        if self.fault == "nan":
            out[0, 0] = np.nan
        elif self.fault == "norm":
            out *= 2
        elif self.fault == "shape":
            out = out[:, :-1]
        elif self.fault == "random":
            out = out + np.random.default_rng(self.calls).normal(0, 0.1, out.shape)
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        elif self.fault == "raise":
            raise RuntimeError("ONNXRuntimeError: invalid graph")
        return out


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("nan", "NaN"),
        ("norm", "norm"),
        ("shape", "shape"),
        ("random", "different vectors for the same text"),
        ("raise", "invalid graph"),
    ],
)
def test_a_model_failing_its_probes_is_refused(fault: str, reason: str) -> None:
    with pytest.raises(SwapRefusedError, match=reason):
        check_encoder(Broken(fault), PROBES)


def test_a_model_of_another_dimension_than_the_index_is_refused() -> None:
    with pytest.raises(SwapRefusedError, match="dimension 16 but the live index holds 8"):
        check_encoder(HashingEncoder(16), PROBES, expected_dimension=8)
    check_encoder(HashingEncoder(16), PROBES, expected_dimension=16)


def _version_dir(root: Path, version: str, dimension: int) -> Path:
    path = root / "src" / version
    path.mkdir(parents=True)
    for name in ("model.onnx", "tokenizer.json"):
        (path / name).write_text("unused: the loader below builds HashingEncoders")
    meta = {"format": 1, "kind": "text", "version": version, "dimension": dimension}
    meta["max_length"] = 16
    (path / "clicktune.json").write_text(json.dumps(meta))
    return path


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    registry = LocalRegistry(tmp_path / "models")
    for version, dimension in [("v1", 16), ("v2", 16), ("v3", 32), ("bad", 16)]:
        registry.add(_version_dir(tmp_path, version, dimension), version)
    registry.set_alias("production", "v1")
    return registry


def _loader(path: Path) -> HashingEncoder:
    meta = json.loads((path / "clicktune.json").read_text())
    if meta["version"] == "bad":
        return Broken("nan", meta["dimension"], "bad")
    return HashingEncoder(meta["dimension"], meta["version"])


@pytest.fixture()
def swapper(registry: LocalRegistry) -> HotSwapper:
    slot = ModelSlot(HashingEncoder(16, "v1"))
    return HotSwapper(slot, registry, _loader, PROBES, expected_dimension=lambda: 16)


def test_swap_serves_the_new_version_and_reports_the_old(swapper: HotSwapper) -> None:
    result = swapper.swap_to("v2")
    assert (result.version, result.previous, result.changed) == ("v2", "v1", True)
    assert swapper.slot.version == "v2"
    assert swapper.swap_to("v2").changed is False


def test_refused_models_leave_the_old_one_serving(swapper: HotSwapper) -> None:
    before = swapper.slot.current
    with pytest.raises(SwapRefusedError, match="'bad' refused, still serving 'v1'.*NaN"):
        swapper.swap_to("bad")
    with pytest.raises(SwapRefusedError, match="dimension 32"):
        swapper.swap_to("v3")
    with pytest.raises(SwapRefusedError, match="unknown model 'v9'"):
        swapper.swap_to("v9")
    assert swapper.slot.current is before
    assert swapper.last_refusal is not None and swapper.last_refusal["version"] == "v9"


def test_a_reindex_accepts_a_new_dimension(swapper: HotSwapper) -> None:
    assert swapper.swap_to("v3", reindex=True).version == "v3"
    assert swapper.slot.current is not None and swapper.slot.current.dimension == 32


def test_promote_moves_the_alias_and_rollback_moves_it_back(swapper: HotSwapper) -> None:
    swapper.promote("v2", "production")
    assert swapper.registry.aliases()["production"] == "v2"
    assert swapper.registry.alias_history("production") == ["v1", "v2"]
    with pytest.raises(SwapRefusedError):
        swapper.promote("bad", "production")
    assert swapper.registry.aliases()["production"] == "v2"  # a refused model is not promoted
    assert swapper.rollback("production").version == "v1"
    assert (swapper.slot.version, swapper.registry.aliases()["production"]) == ("v1", "v1")
    with pytest.raises(RegistryError, match="no previous version"):
        swapper.rollback("production")


def test_the_registry_poller_follows_the_alias_and_skips_refused(swapper: HotSwapper) -> None:
    poller = RegistryPoller(swapper, "production", interval_s=60)
    swapper.registry.set_alias("production", "v2")
    poller.check_once()
    assert swapper.slot.version == "v2"
    swapper.registry.set_alias("production", "bad")
    poller.check_once()
    poller.check_once()  # refused once, not retried
    assert swapper.slot.version == "v2"


def test_the_poller_thread_starts_and_stops(swapper: HotSwapper) -> None:
    poller = RegistryPoller(swapper, "production", interval_s=0.05)
    swapper.registry.set_alias("production", "v2")
    poller.start()
    try:
        for _ in range(100):
            if swapper.slot.version == "v2":
                break
            poller._stop.wait(0.02)
    finally:
        poller.stop()
    assert swapper.slot.version == "v2"
    assert poller._thread is not None and not poller._thread.is_alive()


def test_the_control_listener_follows_messages_for_its_alias(swapper: HotSwapper) -> None:
    listener = ControlListener(consumer=None, swapper=swapper, alias="production")
    listener.handle(json.dumps(model_changed("candidate", "v2")).encode())
    listener.handle(b"not json")
    assert swapper.slot.version == "v1"
    listener.handle(json.dumps(model_changed("production", "v2")).encode())
    assert swapper.slot.version == "v2"
    listener.handle(json.dumps(model_changed("production", "v3", reindex=True)).encode())
    assert swapper.slot.version == "v3"
