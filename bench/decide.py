"""The decision's error rates, measured: false promotes, false rejects and searches spent.

    .venv/bin/python -m bench.decide [--collections products-synth cisi homedepot-dev]
        [--seeds 0 1 2 3 4] [--click-model position cascade] [--examination position cascade]
        [--users-per-query 10]
        [--budget 20000] [--candidates equal noise-0.05 noise-0.1 noise-0.2 clicks supervised]
        [--max-steps 100] [--max-length 256] [--cache reports/bench/decide/cache]
        [--out reports/bench/decide] [--json FILE] [--quick]

No servers. Per collection the live model is the base model (all-MiniLM-L6-v2) and each
candidate (`bench/decide_models.py`: the live model itself, noisy copies, a click-trained and a
supervised fine-tune) has a known true quality: its test nDCG@10 by exact search with the true
judgments. Per user model and seed, one round:

1. Logged searches of the live model on the train queries as the demo's shoppers make them
   (`bench.uplift.simulate_sessions`: `--users-per-query` per query, a `--randomize` share
   showing 10 of the live top `--explore-depth` shuffled, clicks by `tuner.simulator` under the
   click model), split as the tuner splits a batch (`tuner.splits.split_sessions`) and read
   with the tuner's `learning_data` (propensities, and with `--examination cascade` the stop
   probability after a click, fitted on the round).
2. OLD gate, as before ca1ff4e: `ips_dcg@10` per validation session, the paired differences
   taken as independent, promote when mean - z(0.9) * sd / sqrt(sessions) > 0 (the normal
   bound of 483fe16).
3. NEW decision, offline stage: the tuner's own `Scorer` with the `dr_dcg@10` off-policy
   estimate on the live model's held-out log (`offpolicy_log`, `offpolicy_scoring`), one
   hyperparameter set (so all validation queries confirm), and `tuner.gate.decide(...,
   online=True)` with the default gate settings: promote, online, reject or undecided. With
   several `--examination`s (`gate.examination`), each reads the same round and is its own row.
4. NEW decision, online stage (verdict online, `bench/decide_online.py`): interleaved traffic
   on the train queries drawn uniformly, each search `team_draft` of both models' exact top 10,
   clicked by the same user model, `credit`ed into an `InterleaveTally`, and
   `serving.rollout.ab_stats.decide` (the mSPRT on the win share, default `ABSettings`) after
   every search, until it promotes or rolls back, or `--budget` searches (the worker's
   `ab_max_queries`) are spent: then rollback.

A decision is a false promote when the candidate's true relative test delta is <= 0 and it was
promoted, a false reject when the delta is >= +2% and it was not; candidates in between count
for neither. Searches spent: the round's logged searches, plus the online ones for NEW. Rates
come with Wilson 95% intervals over the rounds (seeds). The table goes to `--out`
(decide.md, decide.json with every decision); `--json` writes the summary in the shape of
`bench/results.py`. Quick: products-synth, seeds 0 1, 3 users per query, candidates equal and
noise-0.05, budget 2,000, 64 tokens.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from bench.decide_models import (
    TRAIN_ROUND_SEED,
    Candidate,
    Vectors,
    build_candidates,
    with_explored_depth,
)
from bench.decide_online import interleave, top_lists
from bench.decide_options import build_parser, check_options, collection_path
from bench.decide_table import render, summarise, write_outputs
from bench.uplift import simulate_sessions, tuner_settings
from tuner.config import Examination
from tuner.simulator import UserModel

OLD_CONFIDENCE = 0.9


@dataclass(frozen=True)
class Round:
    """One logged round as both gates read it: the live model's scores on its validation data."""

    searches: int
    scorer: Any  # tuner.session_eval.Scorer over Vectors (the "model" is its own Embed)
    live: Any  # tuner.session_eval.Scores
    gate: Any  # tuner.config.GateSettings (ips_dcg@10 when the round has no live-policy log)
    stop: float | None = None  # the stop probability after a click the cascade examination read


@dataclass(frozen=True)
class Outcome:
    """One decision on one candidate in one round, by the old gate and by the new one."""

    collection: str
    user: str
    candidate: str
    seed: int
    relative: float  # true relative change of test nDCG@10
    old_promoted: bool
    old_bound: float
    verdict: str
    new_bound: float  # the new gate's lower bound at `confidence`
    online: str | None  # promote | rollback | budget; None: no online stage
    online_searches: int
    round_searches: int
    examination: str = "position"  # gate.examination of the offline stage
    stop: float | None = None  # its estimated stop probability after a click (cascade)

    @property
    def new_promoted(self) -> bool:
        return self.verdict == "promote" or self.online == "promote"

    @property
    def new_searches(self) -> int:
        return self.round_searches + self.online_searches


def naive_bound(differences: np.ndarray, confidence: float) -> float:
    """The old gate's bound: mean - z * sd / sqrt(n) with every difference independent."""
    n = int(differences.size)
    mean = float(differences.mean()) if n else 0.0
    if n < 2:
        return mean
    z = NormalDist().inv_cdf(confidence)
    return mean - z * float(differences.std(ddof=1)) / math.sqrt(n)


def error_kind(relative: float, better_by: float = 0.02) -> str | None:
    """Which error a decision on a candidate `relative` better than live can make."""
    if relative <= 0:
        return "false_promote"
    return "false_reject" if relative >= better_by else None


def is_error(kind: str | None, promoted: bool) -> bool:
    return (kind == "false_promote" and promoted) or (kind == "false_reject" and not promoted)


def offline_round(
    live: Vectors,
    collection: Any,
    doc_texts: dict[str, str],
    args: argparse.Namespace,
    user: UserModel,
    seed: int,
    settings: Any,
) -> Round:
    """Simulate one round of the live model's searches and prepare what both gates read."""
    from tuner.iteration import learning_data
    from tuner.offline_estimate import DR_DCG, offpolicy_log, offpolicy_scoring
    from tuner.session_eval import Scorer
    from tuner.splits import split_sessions

    options = argparse.Namespace(**{**vars(args), "seed": seed})
    sessions = simulate_sessions(live, collection, doc_texts, options, user)
    sessions = with_explored_depth(sessions, args.explore_depth)
    splits = split_sessions(sessions, settings.batches)
    validation = splits.validation[: settings.batches.max_validation_sessions]
    learn = learning_data(splits.train, validation, settings)
    gate = settings.gate
    offpolicy = offpolicy_log(validation, None, settings.outcome_weights)
    scoring = None
    if offpolicy is not None and gate.primary_metric == DR_DCG:
        scoring = offpolicy_scoring(offpolicy, live, doc_texts, learn.propensity, learn.cascade)
    else:
        gate = gate.model_copy(update={"primary_metric": "ips_dcg@10"})
    scorer = Scorer(learn.judgments, doc_texts, embedder=_itself, offpolicy=scoring)
    stop = round(learn.cascade.stop, 4) if learn.cascade is not None else None
    return Round(len(sessions), scorer, scorer(live), gate, stop)


def _itself(embed: Any) -> Any:
    return embed


def judge_offline(round_: Round, candidate: Vectors) -> tuple[bool, float, Any]:
    """The old gate's promotion and bound, and the new gate's decision (online stage next)."""
    from tuner.gate import Paired, decide

    scores = round_.scorer(candidate)
    live = round_.live
    old_bound = naive_bound(scores.per_session - live.per_session, OLD_CONFIDENCE)
    if round_.gate.primary_metric == "dr_dcg@10":
        paired = Paired(scores.per_query, live.per_query, scores.per_query_keys)
    else:
        paired = Paired(scores.per_session, live.per_session, scores.queries)
    decision = decide(round_.gate, scores.validation, live.validation, paired=paired, online=True)
    return old_bound > 0, old_bound, decision


def offline_gate(settings: Any, args: argparse.Namespace, examination: str) -> Any:
    """The gate settings of one offline stage: `examination`, and --noninferiority-margin when
    given (else the setting's default)."""
    update: dict[str, Any] = {"examination": Examination(examination)}
    if args.noninferiority_margin is not None:
        update["noninferiority_margin"] = args.noninferiority_margin
    return settings.gate.model_copy(update=update)


def run_collection(
    name: str, args: argparse.Namespace, users: dict[str, UserModel]
) -> list[Outcome]:
    """Every decision on `name`: each user model x seed x candidate."""
    from tuner.config import TunerSettings
    from tuner.judged import load_collection
    from tuner.references import corpus_texts

    collection = load_collection(collection_path(name))
    doc_texts = corpus_texts(collection)
    settings = tuner_settings(TunerSettings(), args)
    train_round = argparse.Namespace(**{**vars(args), "seed": TRAIN_ROUND_SEED})

    def simulate(live: Vectors) -> list[Any]:
        return simulate_sessions(live, collection, doc_texts, train_round, UserModel())

    live, candidates = build_candidates(collection, name, args, settings, simulate, _say)
    queries = collection.split_queries("train")
    live_tops = top_lists(live, doc_texts, queries)
    tops = {c.name: top_lists(c.vectors, doc_texts, queries) for c in candidates}
    outcomes: list[Outcome] = []
    decided = 0  # (user, seed, candidate)s so far: each examination's online stage draws alike
    for user_name, user in users.items():
        for seed in args.seeds:
            for examination in args.examination:
                started = time.perf_counter()
                gate = offline_gate(settings, args, examination)
                read = settings.model_copy(update={"gate": gate})
                round_ = offline_round(live, collection, doc_texts, args, user, seed, read)
                for i, candidate in enumerate(candidates):
                    online_seed = seed * 1000 + decided + i
                    outcomes.append(
                        _decision(
                            name,
                            user_name,
                            seed,
                            round_,
                            candidate,
                            live_tops,
                            tops,
                            args,
                            collection.qrels,
                            user,
                            online_seed,
                        )
                    )
                _say(
                    f"{name} {user_name} seed {seed} {examination} (stop {round_.stop}): "
                    + ", ".join(_short(o) for o in outcomes[-len(candidates) :])
                    + f" [{time.perf_counter() - started:.1f} s]"
                )
            decided += len(candidates)
    return outcomes


def _decision(
    name: str,
    user_name: str,
    seed: int,
    round_: Round,
    candidate: Candidate,
    live_tops: dict,
    tops: dict,
    args: argparse.Namespace,
    qrels: dict,
    user: UserModel,
    online_seed: int,
) -> Outcome:
    old_promoted, old_bound, decision = judge_offline(round_, candidate.vectors)
    online, spent = None, 0
    if decision.verdict == "online":
        online, spent = interleave(
            live_tops, tops[candidate.name], qrels, user, args.budget, online_seed
        )
    return Outcome(
        name,
        user_name,
        candidate.name,
        seed,
        round(candidate.relative, 6),
        old_promoted,
        round(old_bound, 6),
        str(decision.verdict),
        round(float(decision.checks.get("improvement_lower_bound", 0.0)), 6),
        online,
        spent,
        round_.searches,
        str(round_.gate.examination),
        round_.stop,
    )


def _short(outcome: Outcome) -> str:
    old = "P" if outcome.old_promoted else "r"
    new = outcome.verdict[0].upper() + (
        f"/{outcome.online}@{outcome.online_searches}" if outcome.online else ""
    )
    return f"{outcome.candidate} old {old} new {new}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__.split("\n")[0])
    args = parser.parse_args(argv)
    users = check_options(parser, args)
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    for name in args.collections:
        outcomes += run_collection(name, args, users)
    elapsed = time.perf_counter() - started
    rows = summarise(outcomes)
    params = _params(args, elapsed)
    print(render(rows, params))
    write_outputs(Path(args.out), rows, [asdict(o) for o in outcomes], params, args.json)
    return 0


def _params(args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    skip = {"json", "out", "cache"}
    params = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip
    }
    return {**params, "wall_s": round(elapsed, 1)}


def _say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    sys.exit(main())
