"""Encoder runtimes (serving/encoders/runtime.py): OpenVINO gives onnxruntime's vectors on the same
graph, for text, a transformer and both CLIP towers; a runtime that is not installed or a graph that
fails is refused naming both; `auto` times the installed runtimes once and logs the figures."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from serving.config import EncoderRuntime, EncoderSettings
from serving.encoders.encoder import INT8_FILE, HashingEncoder, OnnxTextEncoder
from serving.encoders.model_loader import load_model_dir
from serving.encoders.runtime_choice import RuntimeChooser
from serving.encoders.slot import ModelSlot
from serving.errors import ModelLoadError, SwapRefusedError
from serving.models.registry import LocalRegistry
from serving.rollout.hotswap import HotSwapper

pytest.importorskip("onnx")
pytest.importorskip("openvino")  # clicktune[openvino]; `make setup` installs it
from tests.unit.serving.tiny_model import build_tiny_model, expected_vector  # noqa: E402

RUNTIMES = [EncoderRuntime.onnxruntime, EncoderRuntime.openvino]
TEXTS = ["wing", "boundary layer flow heat shock", "lift drag", "shock", "heat flow wing lift x"]
PARITY = 0.9999  # tuner.export's bar for ONNX against torch; a runtime must not spend it
PROBES = ["wing lift", "boundary layer", "x"]


def _settings(runtime: EncoderRuntime, **kw: object) -> EncoderSettings:
    return EncoderSettings(runtime=runtime, **kw)  # type: ignore[arg-type]


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.min())


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_each_runtime_embeds_the_tiny_model_as_the_graph_says(runtime, tmp_path: Path) -> None:
    table = build_tiny_model(tmp_path, token_types=True)
    encoder = load_model_dir(tmp_path, _settings(runtime, batch_size=2))
    vectors = encoder.encode(TEXTS)
    expected = np.stack([expected_vector(table, t) for t in TEXTS])
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 8)
    assert _min_cosine(vectors, expected) >= PARITY
    reference = load_model_dir(tmp_path, _settings(EncoderRuntime.onnxruntime)).encode(TEXTS)
    assert _min_cosine(vectors, reference) >= PARITY
    assert runtime.value in encoder.graph  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT exported by the tuner: attention, GELU and layer norm, not a lookup."""
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    from tests.unit.tuner.tiny_encoder import build_tiny_encoder
    from tuner.export import export_text_model

    work = tmp_path_factory.mktemp("bert")
    texts = [*TEXTS, "a longer sentence about search ranking and clicks"]
    model = SentenceTransformer(str(build_tiny_encoder(work, texts)), device="cpu")
    export_text_model(
        model, work / "v1", version="v1", parent=None, base_model="tiny", max_length=32
    )
    return work / "v1"


def test_openvino_matches_onnxruntime_on_an_exported_transformer(tiny_bert: Path) -> None:
    texts = [*TEXTS, "a longer sentence about search ranking and clicks", "clicks"] * 3
    ort_vectors = load_model_dir(tiny_bert, _settings(EncoderRuntime.onnxruntime)).encode(texts)
    ov = load_model_dir(tiny_bert, _settings(EncoderRuntime.openvino, batch_size=4))
    assert _min_cosine(ov.encode(texts), ort_vectors) >= PARITY


def test_openvino_matches_onnxruntime_on_both_clip_towers(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    from tests.unit.tuner.clip_support import register_tiny_clip
    from tests.unit.tuner.test_tuner_clip import IMAGES, QUERIES

    version = register_tiny_clip(LocalRegistry(tmp_path / "models"), tmp_path / "src")
    images = list(IMAGES.values())
    towers = {}
    for runtime in RUNTIMES:
        clip = load_model_dir(version.path, _settings(runtime, batch_size=3))
        towers[runtime] = (clip.encode(QUERIES), clip.encode_images(images))  # type: ignore[attr-defined]
        assert runtime.value in clip.graph  # type: ignore[attr-defined]
    (ort_text, ort_image), (ov_text, ov_image) = towers.values()
    assert _min_cosine(ov_text, ort_text) >= PARITY
    assert _min_cosine(ov_image, ort_image) >= PARITY


def test_concurrent_callers_of_one_openvino_encoder_get_their_own_rows(tmp_path: Path) -> None:
    """An OpenVINO infer request runs one call at a time; the pool must not mix callers."""
    table = build_tiny_model(tmp_path)
    encoder = OnnxTextEncoder.from_dir(tmp_path, _settings(EncoderRuntime.openvino))
    results: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        for _ in range(20):
            results[i] = encoder.encode([TEXTS[i]] * (1 + i))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(TEXTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, text in enumerate(TEXTS):
        assert results[i].shape == (1 + i, 8)
        want = np.broadcast_to(expected_vector(table, text), results[i].shape)
        np.testing.assert_allclose(results[i], want, atol=1e-5)


def _without_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def fake(name: str, *args: object) -> object:
        if name == "openvino":
            raise ImportError("No module named 'openvino'")
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib, "import_module", fake)


def test_asking_for_openvino_where_it_is_not_installed_names_it_and_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_tiny_model(tmp_path)
    _without_openvino(monkeypatch)
    with pytest.raises(ModelLoadError, match=r"runtime 'openvino' is not installed.*onnxruntime"):
        load_model_dir(tmp_path, _settings(EncoderRuntime.openvino))


def _registry_with(tmp_path: Path, bend: str | None) -> LocalRegistry:
    """v1 and v2 tiny models; v2's int8 variant bent: 'garbage' bytes or 'unnormalised'."""
    registry = LocalRegistry(tmp_path / "models")
    for version in ("v1", "v2"):
        build_tiny_model(tmp_path / version, seed=int(version[1]))
        meta = json.loads((tmp_path / version / "clicktune.json").read_text())
        (tmp_path / version / "clicktune.json").write_text(json.dumps({**meta, "version": version}))
        shutil.copy(tmp_path / version / "model.onnx", tmp_path / version / INT8_FILE)
    if bend == "garbage":
        (tmp_path / "v2" / INT8_FILE).write_bytes(b"not an onnx graph")
    elif bend == "unnormalised":
        _drop_normalisation(tmp_path / "v2" / INT8_FILE)
    for version in ("v1", "v2"):
        registry.add(tmp_path / version, version)
    return registry


def _drop_normalisation(graph: Path) -> None:
    """The graph's output becomes the plain mean: loads fine, fails the unit-norm probe."""
    import onnx

    model = onnx.load(str(graph))
    kept = [n for n in model.graph.node if n.output[0] not in {"sq", "sqsum", "norm"}]
    final = kept.pop()  # Div(mean, norm) -> Identity(mean)
    kept.append(onnx.helper.make_node("Identity", [final.input[0]], ["sentence_embedding"]))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    onnx.save(model, str(graph))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize(
    ("bend", "reason"),
    [
        ("garbage", "cannot be loaded by {runtime}"),
        ("unnormalised", "model.int8.onnx on {runtime}"),
    ],
)
def test_a_bent_int8_variant_is_refused_and_the_old_model_keeps_serving(
    runtime, bend: str, reason: str, tmp_path: Path
) -> None:
    registry = _registry_with(tmp_path, bend)
    settings = _settings(runtime, variant="int8")
    slot = ModelSlot(load_model_dir(registry.get("v1").path, settings))
    before = slot.current
    swapper = HotSwapper(slot, registry, lambda path: load_model_dir(path, settings), PROBES)
    with pytest.raises(SwapRefusedError, match="'v2' refused, still serving 'v1'") as refused:
        swapper.swap_to("v2")
    assert reason.format(runtime=runtime.value) in str(refused.value)
    assert INT8_FILE in str(refused.value)
    assert slot.current is before and slot.version == "v1"


def test_a_version_asking_for_a_missing_runtime_is_refused_and_the_old_one_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = _registry_with(tmp_path, None)
    slot = ModelSlot(HashingEncoder(8, "v1"))
    ov = _settings(EncoderRuntime.openvino)
    swapper = HotSwapper(slot, registry, lambda path: load_model_dir(path, ov), PROBES)
    _without_openvino(monkeypatch)
    with pytest.raises(SwapRefusedError, match="still serving 'v1'.*'openvino' is not installed"):
        swapper.swap_to("v2")
    assert slot.version == "v1"


def test_auto_serves_the_faster_runtime_and_logs_both_figures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_tiny_model(tmp_path)
    timed: list[str] = []

    def measure(encoder: object) -> float:
        timed.append(encoder.graph)  # type: ignore[attr-defined]
        return 300.0 if "openvino" in encoder.graph else 200.0  # type: ignore[attr-defined]

    chooser = RuntimeChooser(measure)
    auto = _settings(EncoderRuntime.auto)
    with caplog.at_level(logging.INFO, logger="serving.encoders.runtime_choice"):
        encoder = load_model_dir(tmp_path, auto, runtimes=chooser)
        again = load_model_dir(tmp_path, auto, runtimes=chooser)
    assert "openvino" in encoder.graph and "openvino" in again.graph  # type: ignore[attr-defined]
    assert len(timed) == 2  # decided once for the process: the second load timed nothing
    assert encoder.encode(["wing"]).shape == (1, 8)
    assert "runtime openvino (onnxruntime 200 texts/s, openvino 300 texts/s)" in caplog.text
    decided = chooser.decided("text")
    assert decided is not None and decided.texts_per_s == {"onnxruntime": 200.0, "openvino": 300.0}


def test_auto_without_openvino_serves_onnxruntime_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    build_tiny_model(tmp_path)
    _without_openvino(monkeypatch)
    chooser = RuntimeChooser(lambda encoder: 100.0)
    with caplog.at_level(logging.INFO, logger="serving.encoders.runtime_choice"):
        encoder = load_model_dir(tmp_path, _settings(EncoderRuntime.auto), runtimes=chooser)
    assert "onnxruntime" in encoder.graph  # type: ignore[attr-defined]
    assert "openvino left out: not installed" in caplog.text


def test_auto_times_real_runs_on_the_host(tmp_path: Path) -> None:
    build_tiny_model(tmp_path)
    chooser = RuntimeChooser()
    load_model_dir(tmp_path, _settings(EncoderRuntime.auto), runtimes=chooser)
    decided = chooser.decided("text")
    assert decided is not None and set(decided.texts_per_s) == {"onnxruntime", "openvino"}
    assert all(v > 0 for v in decided.texts_per_s.values())


def test_the_default_auto_loads_directly_on_the_runtime_the_process_decided(
    tmp_path: Path,
) -> None:
    """`auto` is the default: an encoder loaded outside load_model_dir decides the same way."""
    from serving.encoders.runtime_choice import PROCESS_RUNTIMES

    build_tiny_model(tmp_path)
    encoder = OnnxTextEncoder.from_dir(tmp_path, EncoderSettings())
    decided = PROCESS_RUNTIMES.decided("text")
    assert decided is not None and decided.runtime.value in encoder.graph
    assert encoder.encode(["wing"]).shape == (1, 8)
