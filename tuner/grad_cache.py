"""Gradient cache: a contrastive step over a large batch in the memory of one mini-batch.

A contrastive loss needs every embedding of the batch at once (each query is scored against
every candidate), so a plain step keeps the activations of the whole batch for backward and
memory grows with the batch. The gradient cache (Gao et al., "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup", 2021; sentence-transformers'
`CachedMultipleNegativesRankingLoss`) splits the step in two:

1. embed the batch in mini-batches without autograd, compute the loss on all the embeddings E
   and its gradient dL/dE (a leaf of B x D numbers: cheap to keep);
2. when the caller backpropagates the returned loss, embed each mini-batch again with autograd
   and backpropagate (E_mb . dL/dE_mb): by the chain rule the parameters receive the same
   gradients as from one pass over the whole batch.

Dropout draws the same masks in both passes: the random state before each mini-batch's first
pass is restored for its second. The returned loss has the value of the plain step's; its
backward runs pass 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

__all__ = ["cached_loss"]

Encode = Callable[[Sequence[str]], Tensor]  # texts -> (len(texts), D), with grad if enabled
LossOf = Callable[[list[Tensor]], Tensor]  # one embedding tensor per text group -> scalar


def cached_loss(
    encode: Encode, groups: Sequence[Sequence[str]], loss_of: LossOf, mini_batch_size: int
) -> Tensor:
    """The loss of `loss_of` over the embeddings of every text group, computed in mini-batches
    of `mini_batch_size` texts; calling `.backward()` on it fills the model's gradients."""
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size {mini_batch_size} must be >= 1")
    chunks = [_chunks(group, mini_batch_size) for group in groups]
    states: list[list[_RandomState]] = []
    reps: list[Tensor] = []
    with torch.no_grad():
        for group in chunks:
            states.append([])
            parts = []
            for chunk in group:
                states[-1].append(_RandomState.capture())
                parts.append(encode(chunk).float())  # (len(chunk), D)
            reps.append(torch.cat(parts).requires_grad_())  # (len(group), D)
    with torch.enable_grad():
        loss = loss_of(reps)
        grads = torch.autograd.grad(loss, reps)  # one (len(group), D) per group
    cached = loss.detach().requires_grad_()
    cached.register_hook(lambda upstream: _backward(encode, chunks, states, grads, upstream))
    return cached


def _backward(
    encode: Encode,
    chunks: list[list[Sequence[str]]],
    states: list[list[_RandomState]],
    grads: Sequence[Tensor],
    upstream: Tensor,
) -> None:
    """Pass 2: each mini-batch embedded again with autograd, its cached gradient pushed in."""
    with torch.enable_grad():
        for group, group_states, grad in zip(chunks, states, grads, strict=True):
            start = 0
            for chunk, state in zip(group, group_states, strict=True):
                with state.restored():
                    part = encode(chunk)  # (len(chunk), D)
                cached = grad[start : start + len(chunk)].to(part)  # (len(chunk), D)
                (part * cached).sum().mul(upstream.to(part)).backward()
                start += len(chunk)


def _chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


class _RandomState:
    """The CPU (and CUDA) random state at one moment, to replay dropout exactly."""

    def __init__(self, cpu: Tensor, cuda: list[Tensor] | None) -> None:
        self.cpu = cpu
        self.cuda = cuda

    @classmethod
    def capture(cls) -> _RandomState:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda)

    @contextmanager
    def restored(self) -> Iterator[None]:
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield
