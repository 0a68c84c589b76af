"""`vlaloop report [RUN_DIR]`: report.md, report.json and success_curve.png for any run, from what
it stored -- a lab's own run as well as the demo's.

A lab's run has the robots' labelled episodes (``episodes/``), the learner's phase record
(``phases.jsonl``) and its ``status.json``, but no simulator to evaluate checkpoints on, so its
curve is the success of the robot episodes themselves: per learner phase (sampled = RL data,
greedy = evaluation episodes), each episode counted once in the phase that started it
(vlaloop/report.py), and a moving average over episodes in the order they ended. The operator's
work per RL round is the demo's table. A demo run dir (its report.json holds greedy evaluations)
gets the demo's own report written again from that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from episodes.status import PHASE_LOG
from vlaloop.report import (
    TAKEOVER_S,
    attribute,
    attribution_notes,
    collect_episodes,
    is_greedy,
    is_success,
    operator_rows,
    operator_table,
    phase_table,
    plot_operator,
    robot_time_line,
    run_robot_time,
    summarize,
    write_report,
)

MOVING_AVERAGE = 10  # episodes in the moving average of the curve (the operator page's window)


class NotARun(ValueError):
    """The directory holds nothing a run writes."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir_arg", nargs="?", metavar="RUN_DIR", default=None,
                        help="the run dir (default: run_dir of the config, or --run-dir)")


def check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise NotARun(f"{run_dir} does not exist")
    if not any((run_dir / name).exists() for name in ("episodes", "status.json", PHASE_LOG)):
        raise NotARun(f"{run_dir} is not a run dir: it has no episodes/, status.json or {PHASE_LOG} "
                      "(the learner writes them into its run_dir)")


def _rl_rounds(rows: list[dict]) -> int | None:
    rounds = [int(r["round"]) for r in rows if r["phase"] == "rl" and r["round"] is not None]
    return max(rounds) + 1 if rounds else None


def _status_line(run_dir: Path) -> str:
    try:
        status = json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "No status.json: the learner has not written one."
    return (f"Learner: phase {status.get('phase', '?')} ({status.get('detail', '') or '-'}), "
            f"policy v{status.get('policy_version', '?')}, iteration {int(status.get('iteration', 0)) + 1}.")


def run_headline(metas: list[dict], rows: list[dict], ops: list[dict]) -> str:
    """One plain line: the robot's labelled episodes, success in the first and last phase with
    sampled episodes, and what the operator did."""
    sampled = [r for r in rows if r["sampled"]]
    if not metas:
        return "**No labelled robot episodes yet.**"
    rate = (f"sampled-episode success {sampled[0]['sampled_successes'] / sampled[0]['sampled']:.0%} in the first "
            f"phase with any -> {sampled[-1]['sampled_successes'] / sampled[-1]['sampled']:.0%} in the last"
            if sampled else "no sampled episodes")
    takeovers, driven = sum(o["takeovers"] for o in ops), sum(o["intervention_steps"] for o in ops)
    seconds = sum(o["operator_s"] for o in ops)
    return (f"**{len(metas)} labelled robot episodes ({sum(not is_greedy(m) for m in metas)} sampled, "
            f"{sum(is_greedy(m) for m in metas)} greedy), {sum(map(is_success, metas))} successes; {rate}; "
            f"the operator took over {takeovers} times in RL rounds ({driven} steps, {seconds:.0f} "
            f"operator-seconds).**")


def write_run_report(run_dir: Path, period_s: float) -> str:
    """report.md, report.json and success_curve.png in run_dir from its store and phase record;
    returns the markdown body. Raises NotARun for a directory that is not a run."""
    check_run_dir(run_dir)
    demo = _demo_report(run_dir)
    if demo is not None:
        return write_report(run_dir, curve=demo["curve"], control=demo["control"], rl_rounds=demo.get("rl_rounds"),
                            new_task=tuple(demo["new_task"]), period_s=demo.get("period_s", period_s),
                            operator=demo.get("operator", "scripted"), seed=demo.get("seed", 0),
                            wall_s=demo.get("wall_s"), complete=demo.get("complete", True), note=demo.get("note", ""))
    log, metas, unlabelled = collect_episodes(run_dir)
    rows = summarize(attribute(log, metas))
    rl_rounds = _rl_rounds(rows)
    for r in rows:
        r["rl_rounds"] = rl_rounds
    ops = operator_rows(rows, metas, (), period_s)
    spent = run_robot_time(run_dir, period_s)
    body = "\n\n".join([
        run_headline(metas, rows, ops), robot_time_line(spent), _status_line(run_dir),
        "Success of the robot's labelled episodes per learner phase (each counted once, in the phase whose "
        "policy served its first step):\n\n" + phase_table(rows),
        "What the operator did, per RL round (sampled episodes only). Operator seconds = operator steps x "
        f"{period_s:g} s + {TAKEOVER_S:g} s per takeover:\n\n" + operator_table(ops, rl_rounds, new_task=False),
        attribution_notes(rows, unlabelled)])
    plot_run_curve(run_dir / "success_curve.png", metas, rows, ops)
    (run_dir / "report.md").write_text("# vlaloop run report\n\n" + body + "\n\n![curve](success_curve.png)\n")
    (run_dir / "report.json").write_text(json.dumps(
        {"kind": "run", "period_s": period_s, "labelled": len(metas), "unlabelled": unlabelled,
         "phases": rows, "operator_rounds": ops, "robot_time": spent.to_json()}, indent=1))
    return body


def _demo_report(run_dir: Path) -> dict | None:
    """The demo's own report.json (greedy evaluations per checkpoint), if this is a demo's run."""
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) and report.get("curve") and "control" in report else None


def plot_run_curve(path: Path, metas: list[dict], rows: list[dict], ops: list[dict]) -> None:
    """Left: success of the labelled robot episodes in the order they ended (moving average), and
    per phase (sampled and greedy) at the episode count where the phase's episodes end.
    Right: the operator's work per RL round (the demo's panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    ordered = sorted(metas, key=lambda m: m.get("finished") or 0)
    for greedy, colour, name in ((False, "#d62728", "sampled"), (True, "#1f77b4", "greedy")):
        xs = [i + 1 for i, m in enumerate(ordered) if is_greedy(m) == greedy]
        ys = [float(is_success(m)) for m in ordered if is_greedy(m) == greedy]
        if ys:  # trailing mean over the last MOVING_AVERAGE episodes (fewer at the start)
            avg = [float(np.mean(ys[max(0, i + 1 - MOVING_AVERAGE):i + 1])) for i in range(len(ys))]
            ax.plot(xs, avg, color=colour, lw=2, marker="." if len(ys) < 30 else None,
                    label=f"{name}: mean of the last {MOVING_AVERAGE}")
    total = 0
    for r in rows:
        n = r["sampled"] + r["greedy"]
        total += n
        for count, wins, colour in ((r["sampled"], r["sampled_successes"], "#d62728"),
                                    (r["greedy"], r["greedy_successes"], "#1f77b4")):
            if count:
                ax.scatter([total], [wins / count], s=20 + 4 * count, color=colour, alpha=0.6, edgecolor="k")
    if not ordered:
        ax.text(0.5, 0.5, "no labelled robot episodes yet", ha="center", va="center", transform=ax.transAxes)
    ax.set(xlabel="labelled robot episodes (in the order they ended)", ylabel="success", ylim=(-0.03, 1.03),
           title="robot episodes: success (dots: per learner phase, size = episodes)")
    if ordered:
        ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    plot_operator(ax2, ops)
    fig.suptitle("vlaloop run report", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace, config) -> int:
    run_dir = Path(args.run_dir_arg or config.run_dir)
    try:
        write_run_report(run_dir, period_s=1.0 / config.robot.rate_hz)
    except NotARun as e:
        print(f"vlaloop report: {e}", file=sys.stderr)
        return 2
    print(f"report: {run_dir / 'report.md'}, curve: {run_dir / 'success_curve.png'}")
    return 0
