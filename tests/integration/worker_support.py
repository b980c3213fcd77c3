"""Helpers of the tuner worker tests: a tiny sentence-transformers model (random weights, a
word-level vocabulary) so that training, ONNX export and reindexing take seconds, not minutes.

Run as a script (`python -m tests.integration.worker_support KILL_POINT`) it is one
`clicktune tuner run --once` worker (settings from the environment) that kills itself with
SIGKILL at KILL_POINT, i.e. exactly where `kill -9` would leave the most half-done work:

    release      the batch is saved, the task does not know it yet
    train        training started (the first progress message), nothing registered
    register     the version is in the registry, the task does not know it yet
    reindex      some documents are in the new index, the candidate alias not moved
    promote      the document alias moved, the registry alias not yet
    ab_running   the experiment is saved (replicas serve it), the task does not name it yet
    rolling_back the experiment is stopped, the candidate alias not yet removed
    canceling    the canceled task's version is archived, its index not yet deleted

`pause-train` stops the worker with SIGSTOP instead (a frozen process: no heartbeat, the lease
left to expire) at training's gate verdict: the model trained, its export and registration, whose
only guard is the lease fence, ahead. SIGCONT wakes it up where it was.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_st_model(path: Path, texts: list[str], dimension: int = 32) -> Path:
    """Save a 2-layer BERT sentence-transformers model whose vocabulary covers `texts`."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    raw = path / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.txt").write_text("\n".join(SPECIAL + words[:5000]) + "\n")
    # `vocab=`: transformers 5 ignores `vocab_file=` here (every word would be [UNK])
    tokenizer = BertTokenizerFast(vocab=str(raw / "vocab.txt"), do_lower_case=True)
    if tokenizer.vocab_size != len(SPECIAL) + len(words[:5000]):
        raise RuntimeError(f"the tiny tokenizer read {tokenizer.vocab_size} words of vocab.txt")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=dimension,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * dimension,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)  # the same random model, and so the same test world, every run
    BertModel(config).save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(dimension, pooling_mode="mean")
    model = SentenceTransformer(modules=[transformer, pooling])
    target = path / "st-model"
    model.save(str(target))
    return target


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _after(owner: Any, name: str, when: Any = lambda *a, **k: True) -> None:
    """Make `owner.name` run, then SIGKILL this process if `when(*args)` says so."""
    original = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            _die()
        return result

    setattr(owner, name, wrapped)


def _pause_at_gate_verdict() -> None:
    from tuner.worker import runner

    watch = runner.TaskRunner._watch

    def watch_and_pause(self: runner.TaskRunner, task: Any) -> Any:
        notify = watch(self, task)

        def verdict_pauses(message: str) -> None:
            notify(message)  # the last message (and task read) before export and registration
            if message.startswith("gate "):
                os.kill(os.getpid(), signal.SIGSTOP)

        return verdict_pauses

    runner.TaskRunner._watch = watch_and_pause  # type: ignore[method-assign]


def _install(kill_point: str) -> None:
    from serving.index.reindex_checkpoints import CheckpointStore
    from serving.index.vector_index import DocumentIndex
    from serving.models.registry import LocalRegistry
    from serving.rollout.ab import ExperimentStore
    from tuner.batches import BatchStore
    from tuner.worker import runner

    if kill_point == "release":
        _after(BatchStore, "save")
    elif kill_point == "train":
        runner.TaskRunner._watch = lambda self, task: lambda message: _die()  # type: ignore
    elif kill_point == "register":
        _after(LocalRegistry, "add")
    elif kill_point == "reindex":
        saves = [0]

        def second_save(*_: Any) -> bool:
            saves[0] += 1
            return saves[0] == 3  # start + one written batch: a partial index exists

        _after(CheckpointStore, "save", second_save)
    elif kill_point == "promote":
        _after(DocumentIndex, "swap_alias")
    elif kill_point == "ab_running":
        _after(ExperimentStore, "save")
    elif kill_point == "rolling_back":
        _after(ExperimentStore, "stop")
    elif kill_point == "canceling":
        _after(LocalRegistry, "archive")
    elif kill_point == "pause-train":
        _pause_at_gate_verdict()
    else:
        raise SystemExit(f"unknown kill point {kill_point!r}")


def main(argv: list[str]) -> int:
    import json

    from clicktune.cli.tuner import build_worker
    from clicktune.config import load_settings

    _install(argv[0])
    worker = build_worker(load_settings())
    print(json.dumps(worker.tick()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
