"""The simulated users' flags of the benches that click (`bench.uplift`, `bench.loop`).

    [--click-model position|cascade|dbn] [--eta 1.0] [--noise 0.05] [--trust-bias 0]
    [--dbn-continue 0.9]

The defaults are the users every bench simulated before the flags existed (position-based,
examination (1/(k+1))^1, 5% noise clicks); `tuner/simulator.py` gives each click model's process.
"""

from __future__ import annotations

import argparse

from tuner.simulator import ClickModel, UserModel

__all__ = ["add_user_arguments", "user_model"]


def add_user_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the simulated users' flags to `parser`, with today's users as the defaults."""
    users = parser.add_argument_group("simulated users (tuner/simulator.py)")
    users.add_argument(
        "--click-model",
        choices=[m.value for m in ClickModel],
        default=ClickModel.position.value,
        help="how users scan the hits: each rank examined with (1/(k+1))^eta (position), "
        "top-down stopping after a click (cascade), or until satisfied (dbn)",
    )
    users.add_argument("--eta", type=float, default=1.0, help="position bias (>= 0)")
    users.add_argument(
        "--noise", type=float, default=0.05, help="click probability of an irrelevant hit"
    )
    users.add_argument(
        "--trust-bias",
        type=float,
        default=0.0,
        help="in [0, 1]: irrelevant hits at rank k are clicked with noise + (1 - noise) * "
        "trust_bias / (k + 1) (0: off)",
    )
    users.add_argument(
        "--dbn-continue", type=float, default=0.9, help="dbn: probability of going on unsatisfied"
    )


def user_model(parser: argparse.ArgumentParser, args: argparse.Namespace) -> UserModel:
    """The users `args` describe; a value outside its rule exits through `parser.error` (2)."""
    try:
        return UserModel(
            args.click_model,  # UserModel names the choices when it is none of them
            eta=args.eta,
            noise=args.noise,
            trust_bias=args.trust_bias,
            dbn_continue=args.dbn_continue,
        )
    except ValueError as exc:
        parser.error(str(exc))
