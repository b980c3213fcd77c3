"""A replica that follows the alias (registry poller, control topic) swaps to a query model only
over an index its document model built; otherwise it keeps serving, logs the pairing and counts
the refusal in `clicktune_swap_refusals_total`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from serving.encoders.encoder import HashingEncoder
from serving.encoders.encoder_pair import PairedEncoder, document_encoder
from serving.encoders.slot import ModelSlot
from serving.models.registry import LocalRegistry
from serving.rollout.hotswap import HotSwapper, live_index_kind, swap_metrics
from serving.rollout.replicas import ControlListener, RegistryPoller, model_changed
from serving.rollout.rollout import check_pairing
from tests.unit.serving.index_fakes import FakeDocumentIndex
from tests.unit.serving.test_serving_rollout_query import model_dir

PROBES = ["wing lift", "boundary layer", "x"]
PAIRING = "query model 'q1' over document model 'v1' cannot serve over the live index"


def _loader(path: Path) -> HashingEncoder | PairedEncoder:
    meta = json.loads((path / "clicktune.json").read_text())
    encoder = HashingEncoder(meta["dimension"], meta["version"])
    if meta.get("document_model") is None:
        return encoder
    return PairedEncoder(encoder, HashingEncoder(meta["dimension"], meta["document_model"]))


@pytest.fixture()
def replica(tmp_path: Path) -> tuple[HotSwapper, FakeDocumentIndex]:
    """A replica serving v2 over v2's index; v1's index is kept, q1 is a query model over v1."""
    registry = LocalRegistry(tmp_path / "models")
    for version, document_model in [("v1", None), ("v2", None), ("q1", "v1")]:
        registry.add(model_dir(tmp_path, version, document_model), version)
    registry.set_alias("production", "v2")
    docs = FakeDocumentIndex()
    docs.build("v1")
    docs.build("v2", live=True)
    swapper = HotSwapper(
        ModelSlot(HashingEncoder(16, "v2")),
        registry,
        _loader,
        PROBES,
        expected_dimension=lambda: 16,
        expected_kind=lambda: live_index_kind(docs, registry),  # type: ignore[arg-type]
        pairing=lambda model: check_pairing(docs, model),  # type: ignore[arg-type]
    )
    return swapper, docs


def _refusals(swapper: HotSwapper) -> str:
    registry = CollectorRegistry()
    registry.register(swap_metrics(swapper))
    return generate_latest(registry).decode()


def test_the_poller_refuses_a_query_model_over_another_model_s_index(
    replica: tuple[HotSwapper, FakeDocumentIndex], caplog: pytest.LogCaptureFixture
) -> None:
    swapper, docs = replica
    poller = RegistryPoller(swapper, "production", interval_s=60)
    swapper.registry.set_alias("production", "q1")  # moved behind the rollout's back
    with caplog.at_level(logging.WARNING, logger="serving.rollout.hotswap"):
        poller.check_once()
        poller.check_once()  # refused once, not retried while the alias names it
    assert swapper.slot.version == "v2" and docs.live == "docs__v2__1"
    assert PAIRING in caplog.text and "'docs__v2__1' (built by model 'v2')" in caplog.text
    assert swapper.last_refusal is not None and PAIRING in swapper.last_refusal["reason"]
    assert 'clicktune_swap_refusals_total{cause="pairing",slot="production"} 1.0' in (
        _refusals(swapper)
    )

    docs.swap_alias("docs__v1__1")  # v1 promoted: its index is live again, then q1 over it
    swapper.registry.set_alias("production", "v1")
    poller.check_once()
    swapper.registry.set_alias("production", "q1")
    poller.check_once()
    assert swapper.slot.version == "q1" and document_encoder(swapper.slot.current).version == "v1"


def test_the_control_listener_refuses_it_too_even_as_a_reindex(
    replica: tuple[HotSwapper, FakeDocumentIndex],
) -> None:
    swapper, _ = replica
    listener = ControlListener(consumer=None, swapper=swapper, alias="production")
    listener.handle(json.dumps(model_changed("production", "q1", reindex=True)).encode())
    assert swapper.slot.version == "v2"
    assert swapper.refusals == {"pairing": 1}
