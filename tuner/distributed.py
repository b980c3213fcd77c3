"""One contrastive step split over processes, with the meaning of one process on the whole batch.

Every process of a data-parallel fine-tune draws the same global batch of B pairs (same seed,
same order) and embeds only its share: a contiguous slice of the pairs, their queries,
positives and first hard negatives. The loss needs every embedding of the batch (each query is
scored against every candidate), so the shares are gathered across processes:

    gathered = all_gather(local.detach());  gathered[rank] = local     (the standard trick)

`all_gather` carries no gradient, so the process's own slot is replaced by its own tensor: each
process computes the whole batch's loss L (identical on every process: same weights, same
masks, same rows), and its backward reaches only the parameters through its own embeddings,
i.e. the terms of dL/dtheta that its rows contribute. Summing the gradients over processes
(`sum_gradients`, one all_reduce) gives dL/dtheta of the one-process step exactly; the weights,
the false-negative mask (the same query's other positives, documents twice in the gathered
batch) and the weighted mean are those of `tuner.train.step_inputs` on the global batch.

Why torch.distributed under torchrun and a hand-written gradient sum rather than DDP,
accelerate or Ray Train: a step may backpropagate in several passes (the gradient cache,
`tuner.grad_cache`, re-embeds each mini-batch in its own backward), which DDP's reducer (one
forward, one backward per step) cannot follow without `no_sync` plumbing through the cache;
accelerate wraps the model in that same DDP; Ray Train would run this same code inside its
workers, adding a cluster to install for a single-machine default. torchrun ships with torch,
gloo runs the test on CPU and nccl the GPUs; the gathered loss is identical whatever launches it.
Launching and the job folder are `tuner.torchrun`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tuner.errors import TrainConfigError

__all__ = ["DataParallel", "shard_bounds"]

T = TypeVar("T")
LossOf = Callable[[list[Tensor]], Tensor]  # one embedding tensor per text group -> scalar


def shard_bounds(rows: int, world_size: int) -> list[int]:
    """Where each process's contiguous share of `rows` pairs starts (and the last one ends):
    sizes differ by at most one."""
    return [rank * rows // world_size for rank in range(world_size + 1)]


@dataclass(frozen=True)
class _Layout:
    """Which rows of one text group each process embeds, and how the gathered rows go back."""

    rows_of: list[list[int]]  # per rank, the group's row indices it embeds (ascending)
    inverse: Tensor  # (rows,) global row i is gathered row inverse[i]

    @classmethod
    def of(cls, owners: Sequence[int], bounds: Sequence[int]) -> _Layout:
        """`owners[j]`: the batch pair row j belongs to; `bounds`: `shard_bounds` of the batch."""
        rows_of = [
            [j for j, pair in enumerate(owners) if lo <= pair < hi]
            for lo, hi in zip(bounds, bounds[1:], strict=False)
        ]
        order = torch.tensor([j for rows in rows_of for j in rows], dtype=torch.long)
        return cls(rows_of, torch.argsort(order))

    @property
    def counts(self) -> list[int]:
        return [len(rows) for rows in self.rows_of]


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel fine-tune (the process group is initialised)."""

    rank: int
    world_size: int

    @classmethod
    def from_process_group(cls) -> DataParallel:
        return cls(dist.get_rank(), dist.get_world_size())

    def check(self, batch_size: int) -> None:
        """`TrainConfigError` when some process would get no pair of a batch."""
        if self.world_size > batch_size:
            raise TrainConfigError(
                f"data-parallel world size {self.world_size} is larger than "
                f"tuner.train.batch_size {batch_size}: every process needs at least one pair "
                f"of each batch (lower the processes or raise batch_size)"
            )

    def start(self, model: nn.Module, seed: int) -> None:
        """Every process from rank 0's weights (LoRA adapters included); dropout then draws
        per process (`seed + rank`), as one process draws per row."""
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
        torch.manual_seed(seed + self.rank)

    def split_step(
        self,
        batch_size: int,
        owners: Sequence[Sequence[int]],
        groups: Sequence[Sequence[T]],
        loss_of: LossOf,
    ) -> tuple[list[list[T]], LossOf]:
        """This process's share of each text group, and the loss of its embeddings: gathered
        into the global groups' row order, then `loss_of` of the whole batch.

        `owners[g][j]`: the batch pair row j of group g comes from (0..batch_size-1)."""
        bounds = shard_bounds(batch_size, self.world_size)
        layouts = [_Layout.of(rows, bounds) for rows in owners]
        local = [
            [group[j] for j in layout.rows_of[self.rank]]
            for group, layout in zip(groups, layouts, strict=True)
        ]

        def gathered_loss(reps: list[Tensor]) -> Tensor:
            return loss_of([self.gather(r, lay) for r, lay in zip(reps, layouts, strict=True)])

        return local, gathered_loss

    def gather(self, local: Tensor, layout: _Layout) -> Tensor:
        """(rows, D): every process's rows in global order; gradient flows to `local` only."""
        counts = layout.counts
        padded = local.new_zeros((max(counts), *local.shape[1:]))  # all_gather: equal sizes
        padded[: local.shape[0]] = local.detach()
        pieces = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(pieces, padded)
        pieces[self.rank] = local  # the one piece with autograd: this process's rows
        rows = torch.cat([p[:c] for p, c in zip(pieces, counts, strict=True)])
        return rows[layout.inverse.to(rows.device)]

    def sum_gradients(self, params: Iterable[nn.Parameter]) -> None:
        """Each parameter's gradient summed over processes (one flat all_reduce): the global
        step's gradient, since each process's backward holds its own rows' terms of it."""
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()
