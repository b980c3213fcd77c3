"""A round's hard negatives mined from the live index (`tuner.train.negatives` ann_mined).

The tuner worker and `clicktune train` run one iteration per round (`tuner.iteration`). With
ann_mined, the round's pairs get their hard negatives here, after the pairs are built and the
live model is loaded and before anything trains: each query key of the round (at most
`train.ann_max_queries`, those with the most pairs) is embedded by the live model's query side
and searched for its `train.ann_depth` nearest documents in the live index (the documents alias
the worker reindexes and serving searches, or `train.ann_index`); the neighbours no session of
that query rewarded become its pairs' negatives (`tuner.negatives.mine_negatives`), and their
texts join the round's. The searches report progress (`tuner.progress`, stage `ann_mining`) and
one line says what was mined: queries, negatives, index, seconds.

A round whose mining index does not exist fails first, before a session is read, with a
`TrainConfigError` naming the index and the rule (`mining_index`). It does not fall back to
in-batch negatives: a round configured for mined negatives that trained without them would
register a candidate (and fill an ablation row) labelled ann_mined that is really the `none`
choice, and the missing index would go unnoticed; the operator who chose ann_mined wants to know
at once, and fixes it by indexing the corpus, naming `train.ann_index`, or choosing another source.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from tuner import progress
from tuner.config import TrainSettings
from tuner.embed_sides import Embed, query_side
from tuner.errors import TrainConfigError
from tuner.model_kinds import DocFields
from tuner.negatives import NeighbourIndex, mine_negatives, mines_from_index, resolve_mining_index
from tuner.pairs import query_key
from tuner.query_kind import embedder_for
from tuner.start_point import StartPoint

if TYPE_CHECKING:
    from tuner.iteration import IterationContext, _Prepared

__all__ = ["NeighbourIndex", "mining_index", "with_mined_negatives"]


def mining_index(neighbours: NeighbourIndex | None, settings: TrainSettings) -> str | None:
    """The index this round mines its negatives in, None when it mines none; a
    `TrainConfigError` naming the index and the rule when it cannot (call before training)."""
    if not mines_from_index(settings):
        return None
    if neighbours is None:
        raise TrainConfigError(
            "tuner.train.negatives 'ann_mined' mines a k-NN index of the corpus, but this "
            "iteration was given none (IterationContext.neighbours): run it from the worker or "
            "`clicktune train`, or choose another negative source"
        )
    return resolve_mining_index(neighbours, settings, neighbours.alias)


def with_mined_negatives(
    data: _Prepared,
    start: StartPoint,
    context: IterationContext,
    settings: TrainSettings,
    index: str | None,
    notify: Callable[[str], None],
) -> _Prepared:
    """`data` with its pairs' hard negatives mined in `index` by `start`'s live model, and
    the negatives' texts added; `data` itself when `index` is None (not ann_mined)."""
    if index is None or context.neighbours is None:
        return data
    keys = len({query_key(p.query) for p in data.pairs})
    searched = min(keys, settings.ann_max_queries)
    began = time.monotonic()
    with progress.stage("ann_mining", "query", searched) as done:
        pairs = mine_negatives(
            data.pairs,
            _query_embedder(start),
            context.neighbours,
            index,
            settings.ann_depth,
            max_queries=settings.ann_max_queries,
            searched=done.update,
        )
    mined = {n for p in pairs for n in p.hard_negative_ids}
    fields = DocFields(context.text_fields, context.image_field)
    missing = sorted(mined - data.doc_texts.keys())
    texts = start.kind.documents(context.documents, missing, fields) if missing else {}
    with_negatives = len({query_key(p.query) for p in pairs if p.hard_negative_ids})
    notify(
        f"ann_mined: {len(mined)} negatives for {with_negatives} of {searched} queries searched "
        f"({keys} in the round, tuner.train.ann_max_queries {settings.ann_max_queries}) in "
        f"{index!r} at depth {settings.ann_depth}, {time.monotonic() - began:.1f} s"
    )
    return replace(data, pairs=pairs, doc_texts={**data.doc_texts, **texts})


def _query_embedder(start: StartPoint) -> Embed:
    """What embeds queries as the live index is searched: the live model's query side."""
    return query_side(embedder_for(start.kind)(start.live_model))
