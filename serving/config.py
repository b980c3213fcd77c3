"""Settings of the serving app (HTTP, encoders, document index)."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator


class SpaceType(StrEnum):
    cosine = "cosinesimil"
    l2 = "l2"
    inner_product = "innerproduct"


_HOST = re.compile(
    r"^(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)


class ImageSettings(BaseModel):
    """Where a document's image may come from and how large it may be (serving/index/doc_images.py).

    Over the API an image is a base64 `data:` URI or an http(s) URL on `allowed_hosts`; a URL
    never reaches a loopback, private, link-local or metadata address
    (serving/index/image_fetch.py).
    Local paths are read only by `clicktune index --trust-local-images` and for documents
    already in the index (reindex, training); no setting lets the API read them.
    """

    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="image URL hosts: exact names or '*.suffix' (any name under suffix); "
        "empty: data: URIs only",
    )
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, description="encoded, per image")
    max_pixels: int = Field(
        default=40_000_000,
        ge=1,
        le=89_478_485,  # Pillow's own decompression-bomb threshold
        description="width * height read from the header, refused before decoding",
    )
    max_redirects: int = Field(default=3, ge=0, le=10)
    fetch_timeout_s: float = Field(default=10.0, gt=0, le=120, description="whole fetch")
    decode_batch: int = Field(
        default=16, ge=1, le=1024, description="images decoded and embedded at a time"
    )
    formats: list[str] = Field(
        default_factory=lambda: ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"],
        min_length=1,
        description="Pillow formats an image may be in; others are not decoded at all",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, hosts: list[str]) -> list[str]:
        cleaned = [h.strip().lower().rstrip(".") for h in hosts]
        for host in cleaned:
            if not _HOST.match(host):
                raise ValueError(
                    f"allowed_hosts entry {host!r} must be a host name or '*.suffix' "
                    "(no scheme, port, path or bare '*')"
                )
        return cleaned

    @field_validator("formats")
    @classmethod
    def _upper(cls, formats: list[str]) -> list[str]:
        return [f.upper() for f in formats]


class IndexSettings(BaseModel):
    """The document index: versioned k-NN indexes behind one alias."""

    alias: str = "docs"
    prefix: str = "docs"
    vector_field: str = "embedding"
    text_fields: list[str] = Field(default_factory=lambda: ["title", "text"])
    image_field: str | None = Field(
        default="image",
        description="data: URI or URL (a path: trusted bulk indexing only) of a document's image; "
        "a CLIP model embeds it instead of the text fields (serving/index/doc_images.py); "
        "None: images are ignored",
    )
    images: ImageSettings = Field(default_factory=ImageSettings)
    space_type: SpaceType = SpaceType.cosine
    hnsw_m: int = Field(default=16, ge=2, le=100)
    ef_construction: int = Field(default=128, ge=2)
    ef_search: int = Field(default=100, ge=2)
    shards: int = Field(default=1, ge=1)
    replicas: int = Field(default=0, ge=0)
    bulk_batch_size: int = Field(default=256, ge=1)
    retention: int = Field(
        default=2, ge=0, description="previous versioned indexes kept for rollback"
    )

    @property
    def next_alias(self) -> str:
        """Alias on the index a reindex is building: replicas dual-write to it."""
        return f"{self.alias}_next"

    @property
    def candidate_alias(self) -> str:
        """Alias on the index of an A/B experiment's candidate arm (also dual-written)."""
        return f"{self.alias}_candidate"


class ReindexEngine(StrEnum):
    """Where a reindex reads, embeds and writes (serving/index/reindex.py, reindex_ray.py)."""

    local = "local"  # this process: one encoding thread, one writing thread
    ray = "ray"  # point-in-time slices over an actor pool (the optional extra clicktune[scale])


class RayGpus(StrEnum):
    """Whether the reindex actors each take a GPU."""

    auto = "auto"  # when the Ray cluster has GPUs
    never = "never"
    always = "always"


class RaySettings(BaseModel):
    """The Ray cluster of `clicktune reindex --engine ray` and its actor pool."""

    address: str | None = Field(
        default=None,
        description="None: start a local cluster in this process (ray.init()); host:port (the "
        "head's GCS, 6379 by default) or ray://host:port (Ray Client, 10001): an existing one",
    )
    local_cpus: int | None = Field(
        default=None, ge=1, description="CPUs of the local cluster; None: Ray counts them"
    )
    actors: int = Field(default=2, ge=1, le=1024, description="encoders reading slices at once")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="also each actor's ONNX threads")
    gpus: RayGpus = RayGpus.auto
    slices_per_actor: int = Field(
        default=2, ge=1, le=64, description="point-in-time slices per actor (load balance)"
    )
    slice_retries: int = Field(
        default=3, ge=0, le=100, description="resumes of one slice after its actor died"
    )
    connect_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="the TCP check of `address`"
    )
    join_timeout_s: float = Field(
        default=60.0, gt=0, le=600, description="ray.init(address=...) after the TCP check"
    )
    actors_ready_timeout_s: float = Field(
        default=120.0, gt=0, description="wait this long for the pool to start and load models"
    )


class ReindexSettings(BaseModel):
    """`clicktune reindex`: which engine copies the documents."""

    engine: ReindexEngine = ReindexEngine.local
    ray: RaySettings = Field(default_factory=RaySettings)


class EncoderRuntime(StrEnum):
    """The library that runs a model's ONNX graphs (serving/encoders/runtime.py)."""

    onnxruntime = "onnxruntime"
    openvino = "openvino"  # the optional extra clicktune[openvino]
    auto = "auto"  # the faster of the installed two, by a self-test at start-up


class EncoderSettings(BaseModel):
    """Encoder knobs: the runtime, its threads, lengths, batches and the graph variant."""

    runtime: EncoderRuntime = Field(
        default=EncoderRuntime.auto,
        description="onnxruntime | openvino | auto: the process times both on its first model "
        "and serves with the faster one (serving/encoders/runtime_choice.py)",
    )
    intra_op_threads: int = Field(default=0, ge=0, description="0 = the runtime decides")
    inter_op_threads: int = Field(default=1, ge=0, description="0 = onnxruntime decides")
    allow_spinning: bool = Field(
        default=True,
        description="onnxruntime's intra-op threads busy-wait for the next run; off frees the "
        "cores for HTTP work between batches",
    )
    max_length: int = Field(default=256, ge=8, le=8192)
    batch_size: int = Field(default=64, ge=1, le=4096, description="most texts in one model run")
    max_batch_tokens: int | None = Field(
        default=8192,
        ge=8,
        description="most padded tokens (rows x longest) in one model run, texts sorted by "
        "length; a longer text runs alone (serving/encoders/token_batches.py); None: cut by "
        "count alone",
    )
    variant: Literal["fp32", "int8"] = Field(
        default="fp32", description="int8 loads model.int8.onnx when the version has one"
    )
    batch_window_ms: float = Field(
        default=2.0, ge=0, le=100, description="gather concurrent requests this long; 0 = off"
    )
    max_batch: int = Field(default=128, ge=1, le=4096, description="texts per gathered batch")


class HotSwapSettings(BaseModel):
    """How a replica learns of and checks a new model version before serving it."""

    poll_s: float = Field(default=5.0, ge=0, description="re-read registry aliases; 0 = never")
    listen_control: bool = Field(default=True, description="follow the Kafka control topic")
    probe_texts: list[str] = Field(
        default_factory=lambda: ["hello world", "a longer probe sentence about search", "x"],
        min_length=1,
    )


class HybridSettings(BaseModel):
    """`/v1/search` mode=hybrid: BM25 + k-NN normalised by a neural-search search pipeline."""

    pipeline: str = "clicktune-hybrid"
    lexical_weight: float = Field(
        default=0.3, ge=0, le=1, description="BM25's weight; k-NN gets 1 - lexical_weight"
    )


class MlCommonsSettings(BaseModel):
    """`clicktune opensearch connect`: names of what it creates in ml-commons."""

    name: str = "clicktune"
    pipeline: str = "clicktune-embed"
    field_map: dict[str, str] = Field(default_factory=lambda: {"text": "embedding"})
    deploy_timeout_s: float = Field(default=60.0, gt=0)


class CollectorSettings(BaseModel):
    """The UBI collector: `POST /v1/queries` and `POST /v1/events` produce to Kafka."""

    enabled: bool = True
    max_body_bytes: int = Field(default=1024 * 1024, ge=256, description="per request")
    max_records: int = Field(default=1000, ge=1, description="records per request")
    send_timeout_s: float = Field(default=5.0, gt=0, description="wait for Kafka's acks=all")
    retry_after_s: int = Field(default=5, ge=1, description="Retry-After of a 503")
    rate_per_s: float = Field(
        default=20.0, ge=0, description="requests a second per client address; 0 = no limit"
    )
    burst: int = Field(default=100, ge=1, description="requests a client may send at once")
    max_attribute_keys: int = Field(
        default=64, ge=1, description="keys of a record's event_attributes / query_attributes"
    )
    max_attribute_value_bytes: int = Field(
        default=8192, ge=16, description="one attribute's value, as compact JSON"
    )


class ABSettings(BaseModel):
    """A/B experiments: the sequential test and the guards that stop an arm at once."""

    alpha: float = Field(default=0.05, gt=0, lt=1, description="error bound of the mSPRT")
    mixture_sd: float = Field(
        default=0.05, gt=0, description="prior sd of the CTR difference in the mSPRT mixture"
    )
    min_queries: int = Field(default=200, ge=1, description="per arm before any decision")
    max_error_rate: float = Field(default=0.05, ge=0, le=1, description="guard per arm")
    max_p99_ms: float = Field(default=1000.0, gt=0, description="guard per arm")
    max_p99_ratio: float = Field(
        default=3.0, ge=1, description="guard: candidate p99 over control p99 (split mode)"
    )
    min_requests_for_guard: int = Field(
        default=50, ge=1, description="searches an arm needs before a guard looks at it"
    )
    health_index: str = Field(
        default="clicktune-arm-health",
        min_length=1,
        description="replicas write per-arm requests, errors and latency here for the worker",
    )
    health_report_s: float = Field(
        default=5.0, gt=0, le=3600, description="each replica writes its arm health this often"
    )


class RandomizationSettings(BaseModel):
    """Shuffle the top hits of a share of searches so position bias can be estimated."""

    fraction: float = Field(
        default=0.0, ge=0.0, le=1.0, description="share of /v1/search calls shuffled (0: off)"
    )
    depth: int = Field(
        default=10,
        ge=2,
        le=100,
        description="how many top hits are shuffled; above k, a shuffled search fetches `depth` "
        "hits and shows the first k (exploration below the page)",
    )
    seed: int | None = Field(default=None, description="fixed seed (tests); None: random")


class DashboardSettings(BaseModel):
    """`GET /dashboard`: the read-only status page (serving/api/dashboard.py)."""

    enabled: bool = True
    poll_s: float = Field(default=5.0, gt=0, le=3600, description="the page re-reads this often")
    reports_dir: Path = Field(
        default=Path("reports"), description="newest demo report.json under here (uplift plot)"
    )
    source_timeout_s: float = Field(
        default=5.0, gt=0, description="a panel whose source takes longer shows as unavailable"
    )
    cache_s: float = Field(
        default=2.0, ge=0, description="pages open at once share one reading this long"
    )


class SpoolSettings(BaseModel):
    """The local spool of UBI records while Kafka is down (serving/state/spool.py)."""

    max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="records beyond this (all topics, under $CLICKTUNE_HOME/spool/) are dropped",
    )
    replay_s: float = Field(
        default=2.0, gt=0, le=3600, description="while Kafka is down, try to replay this often"
    )


class StateBackend(StrEnum):
    """Where the running A/B experiment, reindex checkpoints and the tuner's batches are kept."""

    local = "local"  # files under $CLICKTUNE_HOME: models/experiment.json, reindex/, batches/
    opensearch = "opensearch"  # documents of three OpenSearch indexes, shared by every host


class StateSettings(BaseModel):
    """Where the A/B experiment, reindex checkpoints and tuner batches live: files, or OpenSearch.

    `opensearch` lets replicas and tuner workers on other hosts share them with no shared
    volume: a reindex or a task resumed on another host continues from what the first one left.
    Their replicas follow `opensearch.internal_replicas`, like the task index. One switch for all
    three (the tuner reads it too), so a deployment never splits its state between the two.
    """

    backend: StateBackend = Field(
        default=StateBackend.local,
        description="local: files under $CLICKTUNE_HOME (one host, or a shared volume) | "
        "opensearch: the indexes below (serving/rollout/experiment_store.py, "
        "serving/index/reindex_checkpoints.py, tuner/batch_store.py)",
    )
    experiments_index: str = Field(
        default="clicktune-experiments",
        min_length=1,
        description="one document per document alias: its running experiment; stopped ones kept",
    )
    checkpoints_index: str = Field(
        default="clicktune-reindex-checkpoints",
        min_length=1,
        description="one document per destination alias: its unfinished reindex",
    )
    batches_index: str = Field(
        default="clicktune-batches",
        min_length=1,
        description="one document per released batch and per held-out record, by document alias",
    )
    cache_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="a replica re-reads the experiment at most this often (0: every search)",
    )


class ServingSettings(BaseModel):
    """The HTTP API of the embedding and search service."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    model_version: str = Field(default="production", description="version or alias to serve")
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    index: IndexSettings = Field(default_factory=IndexSettings)
    reindex: ReindexSettings = Field(default_factory=ReindexSettings)
    max_batch_inputs: int = Field(default=256, ge=1)
    max_text_chars: int = Field(default=20_000, ge=1)
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="per request, chunked or not (413)"
    )
    max_json_depth: int = Field(
        default=32, ge=2, le=512, description="nesting of a JSON body's arrays and objects (422)"
    )
    max_k: int = Field(default=100, ge=1, le=10_000, description="most hits /v1/search returns")
    query_log_timeout_s: float = Field(
        default=10.0, gt=0, description="wait this long for Kafka to ack a UBI query record"
    )
    cors_origins: list[str] = Field(default_factory=list)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    hot_swap: HotSwapSettings = Field(default_factory=HotSwapSettings)
    hybrid: HybridSettings = Field(default_factory=HybridSettings)
    ml_commons: MlCommonsSettings = Field(default_factory=MlCommonsSettings)
    ab: ABSettings = Field(default_factory=ABSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    randomization: RandomizationSettings = Field(default_factory=RandomizationSettings)
    spool: SpoolSettings = Field(default_factory=SpoolSettings)
    state: StateSettings = Field(default_factory=StateSettings)
