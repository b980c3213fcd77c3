"""A query model served as a pair: queries through its own graph, documents through its document
model; everything that writes documents takes the document side, everything that searches the
query side; a pair that cannot be made is refused by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clicktune.cli.serve import _batched
from serving.api.app import create_app
from serving.api.auth import Authenticator, Scope
from serving.api.documents import documents_router
from serving.api.metrics import Metrics
from serving.config import EncoderSettings, IndexSettings, ServingSettings
from serving.encoders.batcher import MicroBatcher
from serving.encoders.encoder import HashingEncoder, OnnxTextEncoder
from serving.encoders.encoder_pair import (
    InputType,
    PairedEncoder,
    document_encoder,
    encoder_for_input,
)
from serving.encoders.model_loader import load_model_dir
from serving.encoders.slot import ModelSlot
from serving.errors import ModelLoadError, SwapRefusedError
from serving.index.doc_images import embed_documents
from serving.index.indexer import index_corpus
from serving.index.vector_index import Hit
from serving.models.registry import LocalRegistry
from serving.rollout.ab import (
    CANDIDATE,
    CONTROL,
    Arm,
    ArmRouter,
    ExperimentStore,
    new_experiment,
)
from serving.rollout.hotswap import HotSwapper
from serving.state.query_log import InMemoryQueryLog
from tests.unit.serving.tiny_model import build_tiny_model, expected_vector

TEXTS = ["wing lift", "boundary layer flow", "heat shock"]
SETTINGS = EncoderSettings()


def query_model(path: Path, document_model: str, *, seed: int = 1, dimension: int = 8) -> Path:
    """A tiny model directory that says it is a query model over `document_model`."""
    build_tiny_model(path, seed=seed, dimension=dimension)
    meta = json.loads((path / "clicktune.json").read_text())
    meta |= {"kind": "query", "version": path.name, "document_model": document_model}
    (path / "clicktune.json").write_text(json.dumps(meta))
    return path


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    """v1 (a text model), q1 (a query model over v1) and its table, q-of-q (over q1)."""
    registry = LocalRegistry(tmp_path / "models")
    build_tiny_model(tmp_path / "src" / "v1", seed=0)
    registry.add(tmp_path / "src" / "v1", "v1")
    registry.add(query_model(tmp_path / "src" / "q1", "v1"), "q1")
    registry.add(query_model(tmp_path / "src" / "q9", "v9"), "q9")
    registry.add(query_model(tmp_path / "src" / "qq", "q1"), "qq")
    registry.set_alias("production", "v1")
    return registry


def tables(registry: LocalRegistry) -> dict[str, np.ndarray]:
    """The embedding table each version's graph uses (tiny models: seed 0 for v1, 1 for q1)."""
    path = registry.root.parent / "tables"
    path.mkdir(exist_ok=True)
    return {
        "v1": build_tiny_model(path / "v1", seed=0),
        "q1": build_tiny_model(path / "q1", seed=1),
    }


def test_a_query_model_loads_as_its_graph_for_queries_and_its_document_model_for_documents(
    registry: LocalRegistry,
) -> None:
    table = tables(registry)
    encoder = load_model_dir(registry.get("q1").path, SETTINGS)  # the registry is found
    assert isinstance(encoder, PairedEncoder)
    assert (encoder.version, encoder.documents.version) == ("q1", "v1")
    queries, documents = encoder.encode(TEXTS), document_encoder(encoder).encode(TEXTS)
    for row, text in enumerate(TEXTS):
        np.testing.assert_allclose(queries[row], expected_vector(table["q1"], text), atol=1e-5)
        np.testing.assert_allclose(documents[row], expected_vector(table["v1"], text), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_queries(TEXTS), queries)
    np.testing.assert_allclose(encoder.encode_documents(TEXTS), documents)
    # behind serving's wrappers the document side is still found
    assert document_encoder(MicroBatcher(MicroBatcher(encoder))) is encoder.documents


def test_a_symmetric_model_is_the_same_encoder_on_both_sides(registry: LocalRegistry) -> None:
    encoder = load_model_dir(registry.get("v1").path, SETTINGS)
    assert isinstance(encoder, OnnxTextEncoder)
    for side in InputType:
        assert encoder_for_input(encoder, side) is encoder


def test_a_query_model_outside_a_registry_takes_the_registry_it_is_given(
    registry: LocalRegistry, tmp_path: Path
) -> None:
    loose = shutil.copytree(registry.get("q1").path, tmp_path / "candidate")
    with pytest.raises(ModelLoadError, match="document model 'v1' from a registry.*registry="):
        load_model_dir(loose, SETTINGS)
    paired = load_model_dir(loose, SETTINGS, registry)
    assert document_encoder(paired).version == "v1"


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("q9", "query model 'q9' searches the vectors of document model 'v9'.*unknown model 'v9'"),
        ("qq", "document model 'q1' of kind 'query'; a document model must be one of"),
    ],
)
def test_a_pair_that_cannot_be_made_is_refused_naming_both_models(
    registry: LocalRegistry, version: str, reason: str
) -> None:
    with pytest.raises(ModelLoadError, match=reason):
        load_model_dir(registry.get(version).path, SETTINGS)


def test_a_pair_of_two_dimensions_is_refused(registry: LocalRegistry, tmp_path: Path) -> None:
    registry.add(query_model(tmp_path / "src" / "wide", "v1", dimension=16), "wide")
    with pytest.raises(ModelLoadError, match="'wide' makes 16-dimensional.*'v1' makes 8"):
        load_model_dir(registry.get("wide").path, SETTINGS)


def pair(version: str = "q1", documents: str = "v1") -> PairedEncoder:
    """A query model over a document model of one dimension that give one text other vectors."""
    return PairedEncoder(Shifted(16, version), HashingEncoder(16, documents))


class Shifted(HashingEncoder):
    """A hashing encoder whose vectors are rolled by one slot: another model, same dimension."""

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.roll(super().encode(texts), 1, axis=1)


class Recorder:
    """The parts of `DocumentIndex` that `index_corpus` writes through, recording the vectors."""

    def __init__(self) -> None:
        self.settings = IndexSettings()
        self.alias = self.settings.alias
        self.vectors: dict[str, np.ndarray] = {}
        self.live: str | None = None

    def create_version(self, version: str, dimension: int) -> str:
        return f"docs__{version}__1"

    def bulk_index(self, index: str, docs: list[dict], vectors: np.ndarray) -> int:
        self.vectors[index] = np.asarray(vectors)
        return len(docs)

    def refresh(self, index: str) -> int:
        return len(self.vectors[index])

    def swap_alias(self, index: str) -> str | None:
        previous, self.live = self.live, index
        return previous


def test_indexing_with_a_query_model_embeds_and_names_the_index_by_its_document_model() -> None:
    encoder = MicroBatcher(pair())
    docs = [{"_id": str(i), "text": text} for i, text in enumerate(TEXTS)]
    recorder = Recorder()
    report = index_corpus(docs, encoder, recorder, progress=False)  # type: ignore[arg-type]
    assert report.index == "docs__v1__1"
    documents = HashingEncoder(16, "v1").encode(TEXTS)
    np.testing.assert_allclose(recorder.vectors["docs__v1__1"], documents)
    np.testing.assert_allclose(embed_documents(encoder, docs, IndexSettings()), documents)
    assert not np.allclose(encoder.encode(TEXTS), documents)  # the query side differs


class ApiIndex:
    """One live index built by v1, for the documents API and /v1/search."""

    def __init__(self) -> None:
        self.settings = IndexSettings()
        self.alias = self.settings.alias
        self.written: dict[str, np.ndarray] = {}
        self.searched: list[np.ndarray] = []
        self.client = _Client()

    def live_index(self) -> str:
        return "docs__v1__1"

    def bulk_index(self, index: str, docs: list[dict], vectors: np.ndarray) -> int:
        self.written[index] = np.asarray(vectors)
        return len(docs)

    def search_knn(self, vector, k: int, index: str | None = None) -> list[Hit]:  # type: ignore[no-untyped-def]
        self.searched.append(np.asarray(vector))
        return [Hit("d1", 1.0, index or "docs__v1__1", {"text": "wing"})]


class _Client:
    class indices:  # noqa: N801 - the shape of opensearch-py's client.indices
        @staticmethod
        def get_alias(name: str) -> dict:
            return {"docs__v1__1": {}} if name == "docs" else {}

        @staticmethod
        def get_mapping(index: str) -> dict:
            return {index: {"mappings": {"properties": {"embedding": {"dimension": 16}}}}}


@pytest.fixture()
def api() -> tuple[TestClient, ApiIndex, PairedEncoder]:
    encoder = pair()
    index = ApiIndex()
    settings = ServingSettings()
    slot = ModelSlot(MicroBatcher(encoder), name="production")
    routers = [documents_router(slot, index, settings)]  # type: ignore[arg-type]
    auth = Authenticator({Scope.WRITE: "t-write"})
    app = create_app(slot, index, InMemoryQueryLog(), settings, routers=routers, authenticator=auth)  # type: ignore[arg-type]
    return TestClient(app, headers={"Authorization": "Bearer t-write"}), index, encoder


def test_search_embeds_with_the_query_side_and_documents_with_the_document_side(api) -> None:  # type: ignore[no-untyped-def]
    client, index, encoder = api
    answer = client.post("/v1/search", json={"query": "wing lift"})
    assert answer.status_code == 200 and answer.json()["model_version"] == "q1"
    np.testing.assert_allclose(index.searched[-1], encoder.encode_queries(["wing lift"])[0])

    written = client.post("/v1/documents", json={"documents": [{"_id": "x", "text": "wing"}]})
    assert written.status_code == 200 and written.json()["model_version"] == "v1"
    np.testing.assert_allclose(index.written["docs__v1__1"], encoder.encode_documents(["wing"]))


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
def test_input_type_picks_the_side_and_documents_are_the_default(api, route: str) -> None:  # type: ignore[no-untyped-def]
    client, _, encoder = api
    sides = {
        None: ("v1", encoder.encode_documents(TEXTS)),
        "document": ("v1", encoder.encode_documents(TEXTS)),
        "query": ("q1", encoder.encode_queries(TEXTS)),
    }
    for input_type, (version, expected) in sides.items():
        body = {"input": TEXTS} | ({"input_type": input_type} if input_type else {})
        answer = client.post(route, json=body)
        assert answer.status_code == 200, answer.text
        if route == "/embed":
            np.testing.assert_allclose(answer.json(), expected, atol=1e-6)
        else:
            got = [d["embedding"] for d in answer.json()["data"]]
            np.testing.assert_allclose(got, expected, atol=1e-6)
            assert answer.json()["model"] == version
    models = client.get("/v1/models").json()["data"][0]
    assert (models["id"], models["document_model"]) == ("q1", "v1")


@pytest.mark.parametrize("route", ["/v1/embeddings", "/embed"])
def test_an_unknown_input_type_is_refused_naming_the_value_and_the_choices(api, route) -> None:  # type: ignore[no-untyped-def]
    client = api[0]
    answer = client.post(route, json={"input": ["wing"], "input_type": "passage"})
    assert answer.status_code == 422
    assert "input_type 'passage' is not known: use one of ['query', 'document']" in answer.text
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert schema["InputType"]["enum"] == ["query", "document"]


def test_a_b_and_interleaved_arms_search_with_each_query_model_s_query_side(
    tmp_path: Path,
) -> None:
    arms = {"q1": pair("q1"), "q2": PairedEncoder(Twice(16, "q2"), HashingEncoder(16, "v1"))}
    index = ApiIndex()
    router = ArmRouter(ExperimentStore(tmp_path), arms.__getitem__, index, seed=0)  # type: ignore[arg-type]
    experiment = new_experiment(
        Arm(CONTROL, "q1", "docs"), Arm(CANDIDATE, "q2", "docs"), 0.5, "interleave"
    )
    routed = router.search(experiment, "c1", "wing lift", 2, arms["q1"])
    assert routed.attributes["model_versions"] == ["q1", "q2"]
    searched = [v.tolist() for v in index.searched]
    for encoder in arms.values():
        assert encoder.encode_queries(["wing lift"])[0].tolist() in searched
        assert encoder.encode_documents(["wing lift"])[0].tolist() not in searched


class Twice(HashingEncoder):
    """Rolled by two slots: a third model of the same dimension."""

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.roll(super().encode(texts), 2, axis=1)


def test_a_query_model_hot_swaps_over_its_document_model_s_index_without_a_reindex(
    registry: LocalRegistry,
) -> None:
    slot = ModelSlot(load_model_dir(registry.get("v1").path, SETTINGS))
    swapper = HotSwapper(
        slot,
        registry,
        lambda path: load_model_dir(path, SETTINGS, registry),
        TEXTS,
        expected_dimension=lambda: 8,
        expected_kind=lambda: "text",  # the live index holds a text model's vectors
    )
    result = swapper.swap_to("q1")  # no reindex: the query model searches v1's vectors
    assert (result.version, result.previous) == ("q1", "v1")
    assert document_encoder(slot.current).version == "v1"


def test_document_encodes_of_a_pair_are_batched_and_metered_as_the_document_side() -> None:
    encoder = _batched(pair(), EncoderSettings(batch_window_ms=1))
    assert isinstance(document_encoder(encoder), MicroBatcher)
    slot = ModelSlot(encoder)
    metrics = Metrics()
    metrics.watch(slot)
    document_encoder(slot.current).encode(TEXTS)  # what /v1/documents and /embed documents do
    slot.current.encode(TEXTS[:1])  # type: ignore[union-attr] - a search
    text = metrics.render().decode()
    assert 'clicktune_encode_batch_size_sum{side="document",slot="production"} 3.0' in text
    assert 'clicktune_encode_batch_size_sum{side="query",slot="production"} 1.0' in text
    np.testing.assert_allclose(
        document_encoder(slot.current).encode(TEXTS), HashingEncoder(16, "v1").encode(TEXTS)
    )


def test_a_pair_whose_document_side_fails_its_probes_is_refused(registry: LocalRegistry) -> None:
    slot = ModelSlot(HashingEncoder(16, "v1"))
    broken = PairedEncoder(HashingEncoder(16, "q1"), Spoiled(16, "v1"))
    swapper = HotSwapper(slot, registry, lambda path: broken, TEXTS)
    with pytest.raises(SwapRefusedError, match="NaN"):
        swapper.swap_to("q1")
    assert slot.version == "v1"


class Spoiled(HashingEncoder):
    def encode(self, texts: list[str]) -> np.ndarray:
        out = super().encode(texts)
        out[0, 0] = np.nan
        return out
