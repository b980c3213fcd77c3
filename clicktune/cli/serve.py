"""`clicktune serve`: the embedding and search HTTP service."""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING, Annotated, Any

import typer

from clicktune.cli.common import settings_of

if TYPE_CHECKING:  # the serving stack (fastapi, onnxruntime) loads only when serving
    from fastapi import FastAPI
    from pydantic import SecretStr

    from clicktune.config import Settings
    from serving.api.auth import Authenticator
    from serving.api.query_ids import QueryIdSigner
    from serving.config import EncoderSettings
    from serving.encoders.slot import ModelSlot
    from serving.index.vector_index import DocumentIndex


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="bind address (default: serving.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: serving.port)")] = None,
    model: Annotated[str | None, typer.Option("--model", help="model version or alias")] = None,
) -> None:
    """Serve /v1/embeddings, /embed, /v1/search and the UBI collector on the live model.

    Starts while Kafka is down: UBI records go to the local spool until it is back."""
    import uvicorn
    from kafka import KafkaProducer

    from clicktune.cli.index import load_encoder
    from clicktune.clients import kafka_options, opensearch_client
    from serving.encoders.runtime_choice import PROCESS_RUNTIMES
    from serving.state.lazy_kafka import LazyProducer

    settings = settings_of(ctx)
    serving = settings.serving
    ref = model or serving.model_version
    encoder = load_encoder(settings, ref)
    client = opensearch_client(settings.opensearch)
    # Made by the spool replayer's thread (kafka-python blocks for 30 s without a broker).
    # max_block_ms: a send never blocks (on missing metadata) past the collector's timeout.
    # reconnect_backoff_max_ms: kafka-python backs off up to 30 s between reconnects to a dead
    # broker, so the spool waited that long after the broker was back; retry every replay_s.
    producer = LazyProducer(
        lambda: KafkaProducer(
            **kafka_options(settings.kafka),
            acks="all",
            linger_ms=5,
            max_block_ms=int(1000 * serving.collector.send_timeout_s),
            reconnect_backoff_max_ms=int(1000 * serving.spool.replay_s),
        ),
        retry_s=serving.spool.replay_s,
    )
    app, followers = build_app(settings, encoder, client, producer, ref)
    typer.echo(
        f"serving model {encoder.version!r} (dimension {encoder.dimension}) "
        f"on http://{host or serving.host}:{port or serving.port}",
        err=True,
    )
    for line in PROCESS_RUNTIMES.report():  # runtime auto: the self-test's figures
        typer.echo(line, err=True)
    for follower in followers:
        follower.start()
    try:
        uvicorn.run(app, host=host or serving.host, port=port or serving.port, log_level="info")
    finally:
        for follower in followers:
            follower.stop()
        producer.close(timeout=5)


def build_app(
    settings: Settings, encoder: Any, client: Any, producer: Any, ref: str
) -> tuple[FastAPI, list[Any]]:
    """The app `clicktune serve` runs, with every router it mounts, and the threads to start.

    Nothing here sends a request. UBI records go through the local spool
    (`$CLICKTUNE_HOME/spool/`, serving/state/spool.py) whenever Kafka does not take them; the spool
    replayer among the returned threads sends them on (and connects a `LazyProducer`).
    """
    from serving.api.app import create_app
    from serving.api.collector import KafkaRecordSink, collector_router
    from serving.encoders.slot import ModelSlot
    from serving.index.hybrid import HybridSearch
    from serving.index.vector_index import DocumentIndex
    from serving.rollout.hotswap import swap_metrics
    from serving.state.query_log import SpooledQueryLog
    from serving.state.spool import Spool, SpoolingSink, SpoolReplayer, spool_metrics

    serving = settings.serving
    doc_index = DocumentIndex(client, serving.index)
    spool = Spool(settings.home / "spool", serving.spool.max_bytes)
    query_sink = SpoolingSink(KafkaRecordSink(producer, serving.query_log_timeout_s), spool)
    query_log = SpooledQueryLog(query_sink, settings.ingest.queries_topic)
    replayer = SpoolReplayer(
        spool,
        KafkaRecordSink(producer, serving.collector.send_timeout_s),
        serving.spool.replay_s,
        connect=getattr(producer, "connect", None),  # a LazyProducer connects on this thread
    )
    signer = _signer(settings)
    collector = None
    if serving.collector.enabled:
        collector = collector_router(
            SpoolingSink(KafkaRecordSink(producer, serving.collector.send_timeout_s), spool),
            serving.collector,
            queries_topic=settings.ingest.queries_topic,
            events_topic=settings.ingest.events_topic,
            max_record_bytes=settings.ingest.max_record_bytes,
            signer=signer,
        )
    slot = ModelSlot(_batched(encoder, serving.encoder), name=ref)
    routers, followers, swapper = _replica(settings, slot, doc_index, producer, ref)
    hybrid = HybridSearch(client, serving.index, serving.hybrid)
    arms = _arm_router(settings, doc_index)
    followers.append(_health_reporter(settings, client, arms))
    followers.append(replayer)
    if serving.dashboard.enabled:  # GET /dashboard (serving/api/dashboard.py)
        from clicktune.dashboard import dashboard_router_for
        from serving.api.dashboard_sources import tasks_source
        from serving.state.tasks import OpenSearchTaskStore

        tasks = OpenSearchTaskStore(
            client, settings.tuner.worker.tasks_index, settings.opensearch.internal_replicas
        )
        routers.append(
            dashboard_router_for(settings, slot, client, arms, ref, tasks=tasks_source(tasks))
        )
    app = create_app(
        slot,
        doc_index,
        query_log,
        serving,
        collector,
        routers=routers,
        hybrid=hybrid,
        arms=arms,
        authenticator=authenticator_of(settings),
        signer=signer,
    )
    app.state.metrics.registry.register(spool_metrics(spool))
    app.state.metrics.registry.register(swap_metrics(swapper))
    return app, followers


def authenticator_of(settings: Settings) -> Authenticator:
    """The tokens per scope from the environment (clicktune/config.py `admin`, `auth`)."""
    from serving.api.auth import Authenticator, Scope

    auth = settings.auth
    tokens = {
        Scope.ADMIN: _secret(settings.admin.token),
        Scope.WRITE: _secret(auth.write_token),
        Scope.READ: _secret(auth.read_token),
    }
    return Authenticator(tokens, open_reads=not auth.protect_reads)


def _signer(settings: Settings) -> QueryIdSigner | None:
    from serving.api.query_ids import QueryIdSigner

    key = _secret(settings.auth.query_signing_key)
    return QueryIdSigner(key.encode("utf-8")) if key else None


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _replica(
    settings: Settings, slot: ModelSlot, doc_index: DocumentIndex, producer: Any, ref: str
) -> tuple[list[Any], list[Any], Any]:
    """Admin and documents routers, the threads that follow model changes of alias `ref`, and
    the hot swapper they go through."""
    from kafka import KafkaConsumer

    from clicktune.clients import kafka_options, model_registry
    from serving.api.documents import documents_router, index_dimension
    from serving.encoders.model_loader import load_model_dir
    from serving.rollout.hotswap import HotSwapper, live_index_kind
    from serving.rollout.replicas import ControlListener, ControlPublisher, RegistryPoller
    from serving.rollout.rollout import check_pairing
    from serving.state.lazy_kafka import LazyConsumer

    serving = settings.serving
    registry = model_registry(settings)
    swapper = HotSwapper(
        slot,
        registry,
        lambda path: _batched(load_model_dir(path, serving.encoder, registry), serving.encoder),
        serving.hot_swap.probe_texts,
        expected_dimension=lambda: index_dimension(doc_index),
        expected_kind=lambda: live_index_kind(doc_index, registry),
        pairing=lambda model: check_pairing(doc_index, model),
    )
    alias = ref if ref in registry.aliases() else "production"
    publisher = ControlPublisher(producer, settings.kafka.control_topic)
    routers = [
        _admin_router(settings, swapper, doc_index, publisher, alias),
        documents_router(slot, doc_index, serving, encoder_for=_registry_encoders(settings)),
        _task_router(settings, doc_index),
    ]
    followers: list[Any] = []
    if ref != alias:  # pinned to a version: it never changes under us
        return routers, followers, swapper
    if serving.hot_swap.poll_s > 0:
        followers.append(RegistryPoller(swapper, alias, serving.hot_swap.poll_s))
    if serving.hot_swap.listen_control:
        consumer = LazyConsumer(  # made on the listener's thread: Kafka may be down at start
            lambda: KafkaConsumer(
                settings.kafka.control_topic,
                **kafka_options(settings.kafka),
                group_id=None,  # every replica reads every message
                auto_offset_reset="latest",
            ),
            retry_s=serving.spool.replay_s,
        )
        followers.append(ControlListener(consumer, swapper, alias))
    return routers, followers, swapper


def _admin_router(
    settings: Settings, swapper: Any, doc_index: DocumentIndex, publisher: Any, alias: str
) -> Any:
    """`/admin/models*`: promote and rollback go through the rollout `clicktune models promote`
    runs, so the document alias moves with the model (serving/api/admin.py)."""
    from clicktune.cli.models import rollout_of
    from serving.api.admin import admin_router

    rollout = rollout_of(
        settings, progress=False, publish=publisher.publish, doc_index=doc_index, alias=alias
    )
    return admin_router(swapper, alias=alias, publisher=publisher, rollout=rollout)


def _task_router(settings: Settings, doc_index: DocumentIndex) -> Any:
    """`/api/v1/fine-tuning/task`: tasks stored in OpenSearch, run by `clicktune tuner run`."""
    from serving.api.task_api import task_router
    from serving.state.tasks import OpenSearchTaskStore

    store = OpenSearchTaskStore(
        doc_index.client, settings.tuner.worker.tasks_index, settings.opensearch.internal_replicas
    )
    return task_router(store)


def _batched(encoder: Any, settings: EncoderSettings) -> Any:
    """`encoder` behind its own micro-batcher (serving/encoders/batcher.py), a query model's pair
    one per side; as is when the window is 0."""
    from serving.encoders.batcher import MicroBatcher
    from serving.encoders.encoder_pair import wrap_sides

    if settings.batch_window_ms <= 0:
        return encoder
    window, most = settings.batch_window_ms, settings.max_batch
    return wrap_sides(encoder, lambda side, _: MicroBatcher(side, window_ms=window, max_batch=most))


def _arm_router(settings: Settings, doc_index: DocumentIndex) -> Any:
    """Routes searches to A/B arms while an experiment runs (`clicktune ab start`)."""
    from clicktune.cli.state import experiment_store
    from serving.rollout.ab import ArmRouter

    store = experiment_store(settings, doc_index.client)
    return ArmRouter(store, _registry_encoders(settings), doc_index)


def _health_reporter(settings: Settings, client: Any, arms: Any) -> Any:
    """Writes this replica's per-arm counts where the tuner worker's guards read them."""
    from serving.rollout.arm_health import HealthReporter, OpenSearchArmHealthStore

    ab = settings.serving.ab
    store = OpenSearchArmHealthStore(client, ab.health_index, settings.opensearch.internal_replicas)
    replica = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    return HealthReporter(arms.ledger, store, replica, ab.health_report_s)


_ENCODERS: dict[str, Any] = {}


def _registry_encoders(settings: Settings) -> Any:
    """Encoders of registry versions by name, loaded once per process (dual writes embed per
    index, A/B arms search with their own model)."""
    from functools import lru_cache

    from clicktune.clients import model_registry
    from serving.encoders.model_loader import load_model_dir

    registry = model_registry(settings)

    @lru_cache(maxsize=4)
    def encoder_for(version: str) -> Any:
        return load_model_dir(registry.get(version).path, settings.serving.encoder, registry)

    return _ENCODERS.setdefault(str(settings.home), encoder_for)
