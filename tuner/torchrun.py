"""Fine-tune a text model data-parallel: the caller writes a job folder, torchrun's ranks train it.

`train_data_parallel` trains `model` in place, as `tuner.train.fine_tune` does, through
`torchrun` (tuner.train.distributed: nproc_per_node processes on each of nnodes machines):

    calling process                job folder                    torchrun ranks
    model.save, pairs, texts  ->   start/, job.json         ->   load, fine_tune(parallel=...)
    load_state_dict, report   <-   trained.pt, report.json  <-   rank 0 writes them

The iteration stays in the calling process: it scores, gates, exports and registers once, after
the job, so exactly one process ever exports or registers; the ranks only train. With
nnodes > 1 this machine is node 0 (and hosts the rendezvous); the job folder must be one every
node reads, and each other node runs `other_nodes_command` (logged at launch) for the job.

A rank is `python -m tuner.torchrun JOB_DIR` under torchrun, which a user may also run by hand.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from tuner.config import DistributedBackend, DistributedSettings, TrainSettings
from tuner.errors import DistributedTrainingError, TrainConfigError
from tuner.pairs import TrainingPair
from tuner.train import TrainReport

__all__ = ["other_nodes_command", "run_job", "torchrun_command", "train_data_parallel"]

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
START_DIR = "start"
TRAINED_FILE = "trained.pt"
REPORT_FILE = "report.json"


def train_data_parallel(
    model: Any,
    pairs: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    settings: TrainSettings,
    progress: bool = True,
) -> TrainReport:
    """Train the SentenceTransformer `model` in place under torchrun; its report (device
    "N x cpu"). `DistributedTrainingError` when the job fails: the model is then unchanged."""
    from sentence_transformers import SentenceTransformer

    if not isinstance(model, SentenceTransformer):
        raise TrainConfigError(
            f"tuner.train.distributed world size {settings.distributed.world_size}: "
            f"data-parallel training runs sentence-transformers text models, not "
            f"{type(model).__name__} (set nproc_per_node and nnodes to 1)"
        )
    _check_devices(settings.distributed)
    with _job_folder(settings.distributed) as job:
        write_job(job, model, pairs, doc_texts, settings, progress)
        command = torchrun_command(settings.distributed, job)
        if settings.distributed.nnodes > 1:
            log.info("other nodes join with: %s", " ".join(other_nodes_command(settings, job)))
        log.info("data-parallel fine-tune: %s", " ".join(command))
        returncode = subprocess.run(command, check=False).returncode
        if returncode != 0:
            raise DistributedTrainingError(
                f"the data-parallel fine-tune exited with code {returncode} (command: "
                f"{' '.join(command)}); the ranks' errors are in the log above; the model "
                f"was not changed"
            )
        return read_result(job, model)


def torchrun_command(settings: DistributedSettings, job: Path) -> list[str]:
    """The torchrun command of node 0 (this machine) for the job in `job`."""
    if settings.nnodes == 1:
        nodes = ["--standalone"]  # a free local port: concurrent jobs never clash
    else:
        nodes = [
            f"--nnodes={settings.nnodes}",
            "--node-rank=0",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={settings.rdzv_endpoint}",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={settings.nproc_per_node}",
        *nodes,
        "-m",
        "tuner.torchrun",
        str(job),
    ]


def other_nodes_command(settings: TrainSettings, job: Path) -> list[str]:
    """What every other node runs to join the job (the same folder, shared)."""
    dist_settings = settings.distributed
    return [
        "torchrun",
        f"--nproc-per-node={dist_settings.nproc_per_node}",
        f"--nnodes={dist_settings.nnodes}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={dist_settings.rdzv_endpoint}",
        "-m",
        "tuner.torchrun",
        str(job),
    ]


def write_job(
    job: Path,
    model: Any,
    pairs: Sequence[TrainingPair],
    doc_texts: Mapping[str, str],
    settings: TrainSettings,
    progress: bool,
) -> None:
    """The start model, the pairs, the texts they name and the settings, for every rank."""
    for stale in (TRAINED_FILE, REPORT_FILE):
        (job / stale).unlink(missing_ok=True)
    model.save(str(job / START_DIR))
    named = {p.positive_id for p in pairs} | {n for p in pairs for n in p.hard_negative_ids}
    spec = {
        "settings": settings.model_dump(mode="json"),
        "pairs": [asdict(p) for p in pairs],
        "doc_texts": {d: doc_texts[d] for d in named if d in doc_texts},
        "progress": progress,
    }
    (job / JOB_FILE).write_text(json.dumps(spec))


def read_result(job: Path, model: Any) -> TrainReport:
    """Rank 0's trained weights loaded into `model`, and its report."""
    trained, report = job / TRAINED_FILE, job / REPORT_FILE
    if not (trained.exists() and report.exists()):
        raise DistributedTrainingError(
            f"the data-parallel fine-tune exited cleanly but left no {TRAINED_FILE} and "
            f"{REPORT_FILE} in {job}: rank 0 did not finish"
        )
    model.load_state_dict(torch.load(trained, map_location=model.device, weights_only=True))
    fields = json.loads(report.read_text())
    return TrainReport(**{**fields, "loss_curve": tuple(fields["loss_curve"])})


@contextmanager
def _job_folder(settings: DistributedSettings) -> Iterator[Path]:
    if settings.job_dir is not None:
        settings.job_dir.mkdir(parents=True, exist_ok=True)
        yield settings.job_dir
        return
    with tempfile.TemporaryDirectory(prefix="clicktune-train-") as folder:
        yield Path(folder)


def run_job(job: Path) -> None:
    """One rank of the job in `job` (under torchrun): train, and on rank 0 write the result."""
    from sentence_transformers import SentenceTransformer

    from tuner.distributed import DataParallel
    from tuner.train import fine_tune

    spec = json.loads((job / JOB_FILE).read_text())
    settings = TrainSettings.model_validate(spec["settings"])
    backend = _backend(settings.distributed.backend)
    dist.init_process_group(backend)
    try:
        parallel = DataParallel.from_process_group()
        logging.basicConfig(level=logging.INFO if parallel.rank == 0 else logging.WARNING)
        device = "cpu"
        if backend == "nccl":
            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
            torch.cuda.set_device(device)
        model = SentenceTransformer(str(job / START_DIR), device=device)
        pairs = [_pair(p) for p in spec["pairs"]]
        progress = spec["progress"] and parallel.rank == 0
        report = fine_tune(model, pairs, spec["doc_texts"], settings, progress, parallel)
        if parallel.rank == 0:
            _write_result(job, model, report)
    finally:
        dist.destroy_process_group()


def _check_devices(settings: DistributedSettings) -> None:
    """nccl runs one process per GPU: more processes than this machine's GPUs are refused."""
    devices = torch.cuda.device_count()
    if _backend(settings.backend) == "nccl" and settings.nproc_per_node > devices:
        raise TrainConfigError(
            f"tuner.train.distributed.nproc_per_node {settings.nproc_per_node} with backend "
            f"nccl needs a CUDA device per process and this machine has {devices} (lower "
            f"nproc_per_node, or backend gloo to train on CPU)"
        )


def _backend(backend: DistributedBackend) -> str:
    if backend is DistributedBackend.auto:
        return "nccl" if torch.cuda.is_available() else "gloo"
    return backend.value


def _pair(fields: dict[str, Any]) -> TrainingPair:
    return TrainingPair(
        fields["query"],
        fields["positive_id"],
        fields["weight"],
        tuple(fields["hard_negative_ids"]),
        tuple(fields["negative_weights"]),
    )


def _write_result(job: Path, model: Any, report: TrainReport) -> None:
    # Written then renamed: the caller never reads half a file from a rank that died writing.
    partial = job / f"{TRAINED_FILE}.partial"
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, partial)
    partial.replace(job / TRAINED_FILE)
    (job / REPORT_FILE).write_text(json.dumps(asdict(report), default=str))  # Path, enums


if __name__ == "__main__":
    run_job(Path(sys.argv[1]))
