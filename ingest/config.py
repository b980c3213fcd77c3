"""Settings of the ingest worker (topics, batching, retries). Connections come from the caller."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ingest.index_layout import UbiIndexSettings


class IngestSettings(BaseModel):
    """How the ingest worker reads UBI records from Kafka and writes them to OpenSearch."""

    queries_topic: str = "ubi.queries"
    events_topic: str = "ubi.events"
    queries_index: str = "ubi_queries"
    events_index: str = "ubi_events"
    index: UbiIndexSettings = Field(
        default_factory=UbiIndexSettings, description="shards, replicas, ISM rollover"
    )
    group_id: str = "clicktune-ingest"
    batch_size: int = Field(default=2000, ge=1, le=100_000)
    batch_timeout_ms: int = Field(default=500, ge=1)
    max_record_bytes: int = Field(default=64 * 1024, ge=256)
    initial_backoff_s: float = Field(default=0.5, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    bulk_max_attempts: int = Field(default=5, ge=1, description="tries per item on 429/5xx")
    max_bulk_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    bulk_concurrency: int = Field(
        default=2, ge=1, le=16, description="bulk requests of one batch sent at once"
    )
    dlq_suffix: str = Field(default=".dlq", min_length=1)
    topic_partitions: int = Field(default=3, ge=1, description="for topics the worker creates")
    topic_replication: int = Field(default=1, ge=1)
    progress_interval_s: float = Field(default=5.0, gt=0, description="progress log period")
    gc_threshold: int = Field(
        default=20_000,
        ge=0,
        description="allocations between young-generation GC passes while the worker runs "
        "(the interpreter's 700 costs ~30% of its CPU); 0 = leave the interpreter's settings",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535, description="/metrics port; 0 = off")
    metrics_host: str = "127.0.0.1"
    session_timeout_ms: int = Field(
        default=10_000, ge=1000, description="a dead worker's partitions move after this"
    )
    heartbeat_interval_ms: int = Field(default=3000, ge=100)
