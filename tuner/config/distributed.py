"""Data-parallel fine-tuning settings: processes, nodes and the torch.distributed backend."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

__all__ = ["DistributedBackend", "DistributedSettings"]


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
