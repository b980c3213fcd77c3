"""Two gloo processes on CPU take one step with the loss and gradients of one process.

A tiny sentence-transformers encoder (2 layers, a vocabulary that tells the words apart) takes
the same global batch through `tuner.train.train_step` in one process, and split over two
processes spawned with torch.multiprocessing (each embeds its half; the embeddings are gathered
for in-batch negatives; the gradients are summed). The batch puts one query's two positives on
different processes and a document on one process that is a hard negative on the other, so the
false-negative mask only matches when it is built over the gathered batch. Dropout is off
(eval mode): one process and two draw different masks, and the test compares the arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.unit.tuner.tiny_encoder import build_tiny_encoder
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair
from tuner.train import positives_by_query, train_step

DOCS = {
    "d0": "red cordless drill with two batteries",
    "d1": "blue hand saw",
    "d2": "red hammer drill",
    "d3": "green claw hammer for framing",
    "d4": "old hemp rope",
    "d5": "new duct tape",
    "d6": "yellow tape measure",
}
PAIRS = [  # rank 0 embeds the first three, rank 1 the last three
    TrainingPair("red drill", "d0", 1.0, ("d1",)),  # d1: rank 0's positive too
    TrainingPair("blue saw", "d1", 2.0, ("d6",)),
    TrainingPair("new tape", "d5", 0.25, ("d0",), (0.4,)),
    TrainingPair("red drill", "d2", 5.0),  # the same query's other positive, on rank 1
    TrainingPair("green hammer", "d3", 0.5, ("d2",), (0.3,)),
    TrainingPair("old rope", "d4", 3.0, ("d5",)),  # d5: rank 0's positive
]
# (pairs, mini_batch_size): even and uneven halves, plain and through the gradient cache
CASES = [(PAIRS, None), (PAIRS, 2), (PAIRS[:5], None)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    texts = [*DOCS.values(), *(p.query for p in PAIRS)]
    return build_tiny_encoder(tmp_path_factory.mktemp("tiny"), texts)


def step(model, pairs, mini_batch_size, parallel=None):  # type: ignore[no-untyped-def]
    """The loss and every parameter's gradient after one step on `pairs`."""
    model.zero_grad(set_to_none=True)
    loss = train_step(
        model,
        WeightedInfoNCELoss(0.05),
        pairs,
        doc_texts=DOCS,
        positives=positives_by_query(PAIRS),
        device="cpu",
        mini_batch_size=mini_batch_size,
        parallel=parallel,
    )
    loss.backward()
    if parallel is not None:
        parallel.sum_gradients(model.parameters())
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def load(model_dir):  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 16
    return model.eval()


def rank_main(rank: int, world: int, store: str, model_dir: str, out: str) -> None:
    """One spawned process: every case's loss and summed gradients, saved for the test."""
    import torch.distributed as dist

    from tuner.distributed import DataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model = load(model_dir)
        parallel = DataParallel(rank, world)
        results = [step(model, pairs, mini, parallel) for pairs, mini in CASES]
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_one_process_loss_and_gradients(model_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mp.spawn(rank_main, args=(2, str(tmp_path / "store"), str(model_dir), str(tmp_path)), nprocs=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    model = load(model_dir)
    for index, (pairs, mini) in enumerate(CASES):
        loss, grads = step(model, pairs, mini)
        assert any(float(g.abs().max()) > 0 for g in grads.values())
        for rank, results in enumerate(ranks):
            rank_loss, rank_grads = results[index]
            case = f"case {index} (batch {len(pairs)}, mini-batch {mini}), rank {rank}"
            assert rank_loss == pytest.approx(loss, rel=1e-5, abs=1e-6), case
            assert rank_grads.keys() == grads.keys() and len(grads) > 10, case
            for name, grad in grads.items():
                torch.testing.assert_close(
                    rank_grads[name], grad, rtol=1e-5, atol=1e-5, msg=f"{case}: {name}"
                )

