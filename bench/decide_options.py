"""bench.decide's command line: its options, --quick, and the checks that refuse bad values.

`check_options` applies --quick, refuses a bad value naming the rule (argparse's exit 2), and
builds one user model per --click-model name; `collection_path` says where each --collections
name lives. What the options mean, and the "module doc" of --help: bench.decide's docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.decide_online import SHOWN
from bench.users import add_user_arguments, user_model
from tuner.config import Examination
from tuner.simulator import ClickModel, UserModel

__all__ = ["COLLECTIONS", "build_parser", "check_options", "collection_path"]

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = ("products-synth", "homedepot-dev", "cisi", "cranfield")
DEFAULT_CANDIDATES = ("equal", "noise-0.05", "noise-0.1", "noise-0.2", "clicks", "supervised")
QUICK = {
    "collections": ["products-synth"],
    "seeds": [0, 1],
    "users_per_query": 3,
    "candidates": ["equal", "noise-0.05"],
    "budget": 2000,
    "max_length": 64,
}


def collection_path(name: str) -> Path:
    if name == "products-synth":
        return REPO / "datasets" / "products-synth"
    from tests.shared_data import SHARED_DATA

    return SHARED_DATA / name


def check_options(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> dict[str, UserModel]:
    """Apply --quick, refuse bad values naming the rule, and build one user model per name."""
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    for key, least in (("users_per_query", 1), ("budget", 1), ("max_steps", 1)):
        if getattr(args, key) < least:
            parser.error(f"--{key.replace('_', '-')} {getattr(args, key)} must be >= {least}")
    if not args.seeds:
        parser.error("--seeds needs at least one seed")
    if not 0.0 <= args.randomize <= 1.0:
        parser.error(f"--randomize {args.randomize} must lie in [0, 1]")
    margin = args.noninferiority_margin
    if margin is not None and not 0.0 <= margin < 1.0:
        parser.error(f"--noninferiority-margin {margin} must lie in [0, 1) (a share of live)")
    if args.explore_depth < SHOWN:
        parser.error(f"--explore-depth {args.explore_depth} must be >= {SHOWN} (the page)")
    for candidate in args.candidates:
        if not _known_candidate(candidate):
            parser.error(
                f"--candidates: {candidate!r} is not one of equal, noise-<scale> (a number > 0), "
                "clicks, supervised"
            )
    models = args.click_model if isinstance(args.click_model, list) else [args.click_model]
    return {
        m: user_model(parser, argparse.Namespace(**{**vars(args), "click_model": m}))
        for m in dict.fromkeys(models)
    }


def _known_candidate(name: str) -> bool:
    if name in ("equal", "clicks", "supervised"):
        return True
    try:
        return name.startswith("noise-") and float(name.removeprefix("noise-")) > 0
    except ValueError:
        return False


def build_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench.decide", description=description)
    parser.add_argument("--collections", nargs="+", choices=COLLECTIONS, default=["products-synth"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--users-per-query", type=int, default=10)
    parser.add_argument("--randomize", type=float, default=0.2)
    parser.add_argument("--explore-depth", type=int, default=20)
    parser.add_argument(
        "--budget", type=int, default=20_000, help="online searches before a rollback"
    )
    parser.add_argument("--candidates", nargs="+", default=list(DEFAULT_CANDIDATES))
    parser.add_argument("--max-steps", type=int, default=100, help="cap per fine-tune")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text")
    parser.add_argument("--cache", type=Path, default=REPO / "reports/bench/decide/cache")
    parser.add_argument("--out", type=Path, default=REPO / "reports/bench/decide")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="a tiny run (module doc)")
    parser.add_argument(
        "--examination",
        nargs="+",
        choices=[e.value for e in Examination],
        default=[Examination.position.value],
        help="gate.examination of the offline stage; several: each its own rows, same rounds",
    )
    parser.add_argument(
        "--noninferiority-margin",
        type=float,
        default=None,
        help="gate.noninferiority_margin of the offline stage (default: the setting's)",
    )
    add_user_arguments(parser)
    click_model = next(a for a in parser._actions if a.dest == "click_model")
    click_model.nargs = "+"  # several user models in one run, each its own rows
    click_model.default = [ClickModel.position.value, ClickModel.cascade.value]
    return parser
