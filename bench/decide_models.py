"""bench.decide's candidates of known quality: the live model, degraded copies and fine-tunes.

Every model embeds each text of a collection (its documents and all its queries) once; the
unit vectors are kept as numpy arrays under the cache folder, keyed by collection, model and
token limit, so a later run reuses them and no round ever runs a model. A candidate's true
quality is its nDCG@10 on the collection's test queries by exact search over the whole corpus
with the true judgments (`tuner.session_eval.evaluate_collection_in_memory`), beside the live
model's measured the same way.

- `equal`: the live model itself (true delta 0 by construction).
- `noise-<s>`: the live model with Gaussian noise of `s` times each weight tensor's standard
  deviation added to every weight (fixed torch seed): small `s` is about equal, larger is worse.
- `clicks`: the tuner's own training (`tuner.references.click_pairs` + `tuner.train`) on one
  simulated round of the live model's clicks, drawn with a seed no decision round uses.
- `supervised`: the same training on the collection's true train judgments
  (`tuner.references.supervised_pairs`): clearly better.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Candidate",
    "Vectors",
    "all_texts",
    "build_candidates",
    "with_explored_depth",
]

TRAIN_ROUND_SEED = 10_000  # the clicks candidate's round; decision rounds use --seeds
NOISE_SEED = 7


@dataclass(frozen=True)
class Vectors:
    """One model's unit vectors of every text it may be asked for; an `Embed` by lookup."""

    index: dict[str, int]
    matrix: np.ndarray  # (texts, dim) L2-normalised float32

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self.matrix[[self.index[t] for t in texts]]  # (len(texts), dim)

    @classmethod
    def of(cls, texts: Sequence[str], matrix: np.ndarray) -> Vectors:
        return cls({t: i for i, t in enumerate(texts)}, matrix)


@dataclass(frozen=True)
class Candidate:
    """A candidate model and its true test nDCG@10 beside the live model's."""

    name: str
    built_as: str  # equal | worse | better: what it was made to be (the delta says what it is)
    vectors: Vectors
    ndcg: float
    live_ndcg: float

    @property
    def relative(self) -> float:
        """The true relative change of test nDCG@10 against the live model."""
        return (self.ndcg - self.live_ndcg) / self.live_ndcg if self.live_ndcg else 0.0


def all_texts(collection: Any, doc_texts: dict[str, str]) -> list[str]:
    """Every distinct text a round can embed: documents and the queries of every split."""
    return sorted({*doc_texts.values(), *collection.queries.values()})


def build_candidates(
    collection: Any,
    name: str,
    args: argparse.Namespace,
    settings: Any,
    simulate: Callable[[Vectors], list[Any]],
    say: Callable[[str], None] = print,
) -> tuple[Vectors, list[Candidate]]:
    """The live model's vectors and every candidate `args.candidates` names, cached under
    `args.cache`. `simulate(live)` draws the clicks candidate's training round."""
    from tuner.references import corpus_texts
    from tuner.session_eval import evaluate_collection_in_memory

    doc_texts = corpus_texts(collection)
    texts = all_texts(collection, doc_texts)
    cache = _Cache(Path(args.cache), name, texts, args.max_length)
    started = time.perf_counter()
    live = cache.get("live", lambda: _base(settings))
    live_ndcg = evaluate_collection_in_memory(live, collection, "test")["ndcg@10"]
    say(f"{name}: live test nDCG@10 {live_ndcg:.4f} [{time.perf_counter() - started:.0f} s]")
    candidates = []
    for wanted in args.candidates:
        build, built_as = _builder(wanted, collection, doc_texts, settings, live, simulate)
        vectors = live if wanted == "equal" else cache.get(_model_key(wanted, args), build)
        ndcg = evaluate_collection_in_memory(vectors, collection, "test")["ndcg@10"]
        candidates.append(Candidate(wanted, built_as, vectors, ndcg, live_ndcg))
        say(
            f"{name}: {wanted} test nDCG@10 {ndcg:.4f} ({candidates[-1].relative:+.1%}) "
            f"[{time.perf_counter() - started:.0f} s]"
        )
    return live, candidates


def _model_key(wanted: str, args: argparse.Namespace) -> str:
    return f"{wanted}-steps{args.max_steps}" if wanted in ("clicks", "supervised") else wanted


def _builder(
    wanted: str,
    collection: Any,
    doc_texts: dict[str, str],
    settings: Any,
    live: Vectors,
    simulate: Callable[[Vectors], list[Any]],
) -> tuple[Callable[[], Any], str]:
    """How to make the model `wanted` names (a SentenceTransformer) and what it is made as."""
    from tuner.references import click_pairs, supervised_pairs

    if wanted == "equal":
        return (lambda: None), "equal"
    if wanted.startswith("noise-"):
        scale = float(wanted.removeprefix("noise-"))
        return (lambda: _noisy(_base(settings), scale)), "worse"
    if wanted == "clicks":
        return (lambda: _trained(click_pairs(simulate(live), settings), doc_texts, settings)), (
            "better"
        )
    if wanted == "supervised":
        return (lambda: _trained(supervised_pairs(collection), doc_texts, settings)), "better"
    raise ValueError(
        f"candidate {wanted!r} is not known: use equal, noise-<scale>, clicks or supervised"
    )


def _base(settings: Any) -> Any:
    from tuner.base_models import load_text_model

    model = load_text_model(settings.train.base_model)
    model.max_seq_length = settings.train.max_length
    return model


def _noisy(model: Any, scale: float) -> Any:
    """`model` with N(0, (scale * sd(w))^2) added to each weight tensor w (fixed seed)."""
    import torch

    generator = torch.Generator().manual_seed(NOISE_SEED)
    with torch.no_grad():
        for weights in model.parameters():
            if weights.numel() > 1:
                noise = torch.randn(weights.shape, generator=generator, dtype=weights.dtype)
                weights.add_(noise * scale * weights.std())
    return model


def _trained(pairs: Sequence[Any], doc_texts: dict[str, str], settings: Any) -> Any:
    from tuner.train import fine_tune

    model = _base(settings)
    fine_tune(model, pairs, doc_texts, settings.train, progress=False)
    return model


class _Cache:
    """Vectors per model under `root/<collection>/`, valid for exactly these texts."""

    def __init__(self, root: Path, collection: str, texts: list[str], max_length: int) -> None:
        self.folder = root / collection
        self.texts = texts
        digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
        self.suffix = f"len{max_length}-{digest}"

    def get(self, model: str, build: Callable[[], Any]) -> Vectors:
        from tuner.session_eval import torch_embedder

        path = self.folder / f"{model}-{self.suffix}.npy"
        if path.is_file():
            return Vectors.of(self.texts, np.load(path))
        matrix = torch_embedder(build())(self.texts).astype(np.float32)  # (texts, dim)
        self.folder.mkdir(parents=True, exist_ok=True)
        np.save(path, matrix)
        return Vectors.of(self.texts, matrix)


def with_explored_depth(sessions: Sequence[Any], depth: int) -> list[Any]:
    """`sessions` with each randomised one labelled with the shuffled `depth`, as serving's
    `shuffle_top_<depth>` label reads back (`bench.uplift` marks them `randomized: true` only,
    which the off-policy estimate refuses: it must know how deep the shuffle reached)."""
    return [replace(s, explored_depth=depth) if s.randomized else s for s in sessions]
