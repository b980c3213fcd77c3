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
from tests.unit.tuner.tool_catalogue import DOCS
from tuner.config import TrainSettings
from tuner.losses.weighted_infonce import WeightedInfoNCELoss
from tuner.pairs import TrainingPair
from tuner.train import positives_by_query, train_step

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


def test_more_processes_than_pairs_per_step_are_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"world size 4 \(nproc_per_node 2 x nnodes 2\).*"
        r"batch_size 3: every process needs at least one pair",
    ):
        TrainSettings(
            batch_size=3,
            distributed={"nproc_per_node": 2, "nnodes": 2, "rdzv_endpoint": "h:1", "job_dir": "j"},
        )


def test_several_nodes_need_a_meeting_point_and_a_shared_job_folder() -> None:
    with pytest.raises(ValueError, match="nnodes 2 needs rdzv_endpoint.*got None"):
        TrainSettings(distributed={"nnodes": 2, "job_dir": "/shared/job"})


@pytest.fixture(scope="module")
def still_model_dir(model_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The tiny encoder without dropout, so a trained run is comparable across layouts."""
    model = load(model_dir)
    config = model[0].auto_model.config
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    target = tmp_path_factory.mktemp("still") / "st-model"
    model.save(str(target))
    return target


def test_torchrun_job_trains_the_model_as_one_process_does(still_model_dir) -> None:  # type: ignore[no-untyped-def]
    from tuner.model_kinds import TEXT
    from tuner.train import fine_tune

    settings = TrainSettings(
        batch_size=6, max_steps=3, learning_rate=1e-4, warmup_ratio=0.0, max_length=16
    )
    single = load(still_model_dir)
    expected = fine_tune(single, PAIRS, DOCS, settings, progress=False)
    model = load(still_model_dir)
    parallel = TrainSettings.model_validate(
        {**settings.model_dump(), "distributed": {"nproc_per_node": 2}}
    )
    report = TEXT.train(model, PAIRS, DOCS, parallel, progress=False)
    assert report.device == "2 x cpu" and report.steps == 3 and report.pairs == 6
    assert report.loss_curve == pytest.approx(expected.loss_curve, rel=1e-5)
    # Compared by what they embed: a weight whose true gradient is 0 (attention key biases)
    # gets float noise that Adam scales up to a step, differently for each summation order.
    texts = [*DOCS.values(), *(p.query for p in PAIRS)]
    start = load(still_model_dir).encode(texts, convert_to_tensor=True)
    trained = model.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(
        trained, single.encode(texts, convert_to_tensor=True), atol=1e-5, rtol=1e-4
    )
    assert float((trained - start).abs().max()) > 1e-3  # the job's weights came back


def test_clicktune_train_refuses_more_processes_than_pairs_per_step(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from clicktune.cli import app

    monkeypatch.setenv("CLICKTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("CLICKTUNE_TUNER__TRAIN__BATCH_SIZE", "4")
    result = CliRunner().invoke(app, ["train", "--nproc", "8"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--nproc 8" in result.output and "world size 8" in result.output
    assert "larger than batch_size 4" in result.output


def test_a_failed_job_leaves_the_model_unchanged_and_names_the_exit(monkeypatch, model_dir) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    from tuner.errors import DistributedTrainingError
    from tuner.torchrun import train_data_parallel

    monkeypatch.setattr(
        "tuner.torchrun.subprocess.run", lambda cmd, check: subprocess.CompletedProcess(cmd, 3)
    )
    model = load(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(batch_size=6, distributed={"nproc_per_node": 2})
    with pytest.raises(DistributedTrainingError, match="exited with code 3.*torch.distributed.run"):
        train_data_parallel(model, PAIRS, DOCS, settings)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_data_parallel_training_refuses_a_model_that_is_not_a_text_model() -> None:
    from tuner.errors import TrainConfigError
    from tuner.torchrun import train_data_parallel

    settings = TrainSettings(batch_size=6, distributed={"nproc_per_node": 2})
    with pytest.raises(TrainConfigError, match="world size 2: .*text models, not Linear"):
        train_data_parallel(torch.nn.Linear(2, 2), PAIRS, DOCS, settings)


def test_nccl_with_more_processes_than_gpus_is_refused(model_dir) -> None:  # type: ignore[no-untyped-def]
    from tuner.errors import TrainConfigError
    from tuner.torchrun import train_data_parallel

    gpus = torch.cuda.device_count()
    settings = TrainSettings(
        batch_size=6, distributed={"nproc_per_node": gpus + 1, "backend": "nccl"}
    )
    with pytest.raises(TrainConfigError, match=f"nproc_per_node {gpus + 1} with backend nccl"):
        train_data_parallel(load(model_dir), PAIRS, DOCS, settings)
