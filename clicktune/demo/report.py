"""The demo's report: `report.json`, `report.md` (a table) and `uplift.png` (a plot)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clicktune.demo.loop import REFERENCES, RoundResult

METRICS = ("ndcg@10", "mrr@10", "recall@100")
RUN_KEYS = ("run_id", "dataset", "base", "rounds")  # what re-measuring a run's references needs


def build_report(
    dataset: str,
    rounds: Sequence[RoundResult],
    references: Mapping[str, Mapping[str, float] | None],
    run_id: str | None = None,
    users: Mapping[str, object] | None = None,
    seed: int | None = None,
    method: str | None = None,
) -> dict[str, Any]:
    """The report object: base metrics, the references measured beside them, every round, and
    the simulated users that clicked (`UserModel.config()`), so results say who produced them."""
    report = {
        "dataset": dataset,
        "run_id": run_id,
        "users": dict(users) if users is not None else None,
        "seed": seed,
        "method": method,  # tuner.train.method of the run (clicktune demo --method)
        "base": _pick(rounds[0].metrics),
        "rounds": [
            {
                "round": r.round,
                "model_version": r.model_version,
                "metrics": _pick(r.metrics),
                "status": r.status,
                "traffic": r.traffic,
                "seconds": r.seconds,
                "candidate_exact": _pick(r.candidate_exact),
                "live_exact": _pick(r.live_exact),
                "offline": r.offline,
                "online": r.online,
                "deploy": r.deploy,
            }
            for r in rounds
        ],
    }
    return with_references(report, references)


def with_references(
    report: Mapping[str, Any], references: Mapping[str, Mapping[str, float] | None]
) -> dict[str, Any]:
    """`report` with `references` added (replacing those of the same name), and what is derived
    from them recomputed; a reference in neither is None."""
    updated = dict(report)
    updated.update({name: _pick(references.get(name) or report.get(name)) for name in REFERENCES})
    updated["supervised_share"] = supervised_share(updated)
    updated["ipw_gain"] = ipw_gain(updated)
    return updated


class ReportError(ValueError):
    """A report folder that does not hold what was asked of it."""


def finished_run(path: Path) -> dict[str, Any]:
    """The report.json of a finished demo run, checked to name its run and dataset."""
    if not path.is_file():
        raise ReportError(
            f"no report at {path}: --references-only needs the folder of a finished demo run "
            "(its --report)"
        )
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not JSON ({exc}): not a demo report") from exc
    missing = [k for k in RUN_KEYS if not report.get(k)] if isinstance(report, dict) else []
    if not isinstance(report, dict) or missing:
        raise ReportError(
            f"{path} lacks {', '.join(missing) or 'a JSON object'}: not the report of a demo run "
            "(reports written before run_id was recorded cannot be re-measured)"
        )
    return report


def missing_references(report: Mapping[str, Any]) -> list[str]:
    """The reference models `report` has no metrics for (a run with --no-references: all)."""
    return [name for name in REFERENCES if not report.get(name)]


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write report.json, report.md and uplift.png into `out`; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "report.json", out / "report.md", out / "uplift.png"]
    paths[0].write_text(json.dumps(report, indent=2) + "\n")
    paths[1].write_text(markdown_table(report))
    _plot(report, paths[2])
    return paths


def markdown_table(report: dict[str, Any]) -> str:
    base = report["base"]["ndcg@10"]
    lines = [
        f"# clicktune demo on {report['dataset']}",
        "",
        "| round | live model | status | nDCG@10 | MRR@10 | Recall@100 | nDCG@10 vs base "
        "| candidate vs live, exact | offline | online |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rounds"]:
        m = r["metrics"]
        lines.append(
            f"| {r['round']} | {r['model_version']} | {r['status']} | {m['ndcg@10']:.4f} | "
            f"{m['mrr@10']:.4f} | {m['recall@100']:.4f} | {_relative(m['ndcg@10'], base)} "
            f"| {_candidate_vs_live(r)} | {offline_cell(r.get('offline'))} "
            f"| {online_cell(r.get('online'))} |"
        )
    for name in REFERENCES:
        m = report.get(name)
        if m:
            lines.append(
                f"| ref | {name} | - | {m['ndcg@10']:.4f} | {m['mrr@10']:.4f} | "
                f"{m['recall@100']:.4f} | {_relative(m['ndcg@10'], base)} | - | - | - |"
            )
    users = report.get("users")
    if users:
        shown = ", ".join(f"{k} {v}" for k, v in users.items())
        seed = report.get("seed")
        seeded = f"; seed {seed}" if seed is not None else ""
        lines += ["", f"Simulated users: {shown}{seeded}."]
    if any(r.get("offline") for r in report["rounds"]):
        lines += [
            "",
            "Offline: the gate's verdict (promote: strong evidence; online: not worse, tested "
            "online; reject; undecided) with the per-query dr_dcg@10 gain and its lower bound. "
            "Online: the interleaving test's candidate wins/losses/ties and the searches it took.",
        ]
    if any(r.get("candidate_exact") for r in report["rounds"]):
        lines += [
            "",
            "Candidate vs live, exact: nDCG@10 of the round's trained candidate (deployed or "
            "rejected) and of the model it was gated against, each ranking the whole corpus for "
            "the test queries, as the references do; the gate never saw these figures.",
        ]
    share = supervised_share(report)
    if share is not None:
        lines += [  # three decimals: a 0.896 must not read as the 0.9 target
            "",
            f"The loop's uplift (live model after the last round) = {share:.3f} of the "
            "supervised uplift (nDCG@10).",
        ]
    gain = ipw_gain(report)
    if gain is not None:
        lines += [
            "",
            f"Position-bias correction: clicks {report['clicks']['ndcg@10']:.4f} vs no_ipw "
            f"{report['no_ipw']['ndcg@10']:.4f} nDCG@10 ({gain:+.4f}), the same sessions and "
            "one fine-tune from the base each.",
        ]
    return "\n".join(lines) + "\n"


def offline_cell(offline: Mapping[str, Any] | None) -> str:
    """The gate's verdict with its per-query estimate and lower bound, e.g.
    'online: +0.0123 (LB -0.0045)'; '-' when no candidate was gated."""
    if not offline:
        return "-"
    estimate = offline.get("improvement_per_query")
    bound = offline.get("improvement_lower_bound")
    if estimate is None or bound is None:
        return str(offline.get("verdict", "-"))
    return f"{offline['verdict']}: {estimate:+.4f} (LB {bound:+.4f})"


def online_cell(online: Mapping[str, Any] | None) -> str:
    """The interleaving test's wins / losses / ties, searches and outcome; '-' without one."""
    if not online:
        return "-"
    return (
        f"{online.get('decision', '?')}: {online.get('wins', 0)}/{online.get('losses', 0)}/"
        f"{online.get('ties', 0)} in {online.get('searches', 0)} searches"
    )


def ipw_gain(report: Mapping[str, Any]) -> float | None:
    """nDCG@10 of the `clicks` reference minus that of `no_ipw` (the ablation), trained alike on
    the same sessions; None unless both were measured."""
    clicks, no_ipw = report.get("clicks"), report.get("no_ipw")
    if not clicks or not no_ipw:
        return None
    return round(clicks["ndcg@10"] - no_ipw["ndcg@10"], 6)


def supervised_share(report: Mapping[str, Any]) -> float | None:
    """The live system's nDCG@10 gain over base as a share of the supervised reference's gain
    over base measured the same way (exact search); None without a supervised reference."""
    supervised, base_exact = report.get("supervised"), report.get("base_exact")
    if not supervised or not base_exact:
        return None
    gain = supervised["ndcg@10"] - base_exact["ndcg@10"]
    live = report["rounds"][-1]["metrics"]["ndcg@10"] - report["base"]["ndcg@10"]
    return live / gain if gain > 0 else None


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [r["round"] for r in report["rounds"]]
    fig, ax = plt.subplots(figsize=(8.4, 4.0), dpi=120)
    for metric in METRICS:
        ax.plot(rounds, [r["metrics"][metric] for r in report["rounds"]], marker="o", label=metric)
    scored = [r for r in report["rounds"] if r.get("candidate_exact")]
    if scored:
        ax.scatter(
            [r["round"] for r in scored],
            [r["candidate_exact"]["ndcg@10"] for r in scored],
            marker="x",
            color="black",
            label="candidate nDCG@10 (exact)",
        )
    for name, style in (("supervised", "--"), ("clicks", "-."), ("no_ipw", ":")):
        if report.get(name):
            ax.axhline(
                report[name]["ndcg@10"], linestyle=style, color="gray", label=f"{name} nDCG@10"
            )
    ax.set_xlabel("round")
    ax.set_ylabel("score on the test queries")
    ax.set_xticks(rounds)
    ax.set_title(f"clicktune closed loop on {report['dataset']}")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")  # off the data
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _candidate_vs_live(round_: Mapping[str, Any]) -> str:
    candidate, live = round_.get("candidate_exact"), round_.get("live_exact")
    if not candidate or not live:
        return "-"
    gain = candidate["ndcg@10"] - live["ndcg@10"]
    return f"{candidate['ndcg@10']:.4f} vs {live['ndcg@10']:.4f} ({gain:+.4f})"


def _pick(metrics: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if metrics is None else {k: float(metrics[k]) for k in METRICS}


def _relative(value: float, base: float) -> str:
    return f"{(value - base) / base * 100:+.1f}%" if base else "n/a"
