"""The demo's report: a success-rate table per learner phase and a PNG curve, from what the run stored.

The rows are the learner's own record of its phases (``runs/<run>/phases.jsonl``, written by the
phase loop: each Stage 0, RL round and SFT phase with the policy version it served and the one it
published). Robot episodes are attributed to them by one rule:

    an episode is counted once, in the phase whose policy served its FIRST step.

That version is also what decided the learner phase the episode was collected in: the robot picks
sampled (RL) or greedy (SFT evaluation) when the episode starts, and each version is served by
exactly one phase (the phase that starts when it is published). An episode that straddles a
phase change -- a hot-swap mid-episode, or an end that arrives after the learner moved on -- is
therefore counted with the phase it started in; the report says how many did. Episodes whose first
version no phase served (none in a normal run) get their own row, so every labelled robot episode
in the store appears in exactly one row. ``report.json`` holds the same rows for tools and tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from episodes.status import PHASE_LOG, read_phase_log
from episodes.store import EpisodeStore, episode_key

LABELS = ("success", "failure")
MIN_EPISODES_FOR_A_RATE = 5  # fewer sampled (or greedy) episodes in a phase are drawn as points only


def _is_success(meta: dict) -> bool:
    return meta.get("outcome") == "success"


def first_version(meta: dict) -> int | None:
    """The version that served the episode's first step (older metas: the oldest version in it)."""
    v = meta.get("first_policy_version")
    if v is None:
        known = [int(x) for x in meta.get("policy_versions") or [] if x is not None and int(x) >= 0]
        v = min(known) if known else meta.get("policy_version")
    return None if v is None or int(v) < 0 else int(v)


def is_greedy(meta: dict) -> bool:
    return meta.get("source") == "eval" or meta.get("mode") == "greedy"


def _phase_for(candidates: list[dict], meta: dict) -> dict:
    """Normally one phase served a version; if a log holds several, the last one started before the
    episode ended."""
    started = [p for p in candidates if p["started"] <= meta.get("finished", math.inf)]
    return (started or candidates)[-1]


def attribute(log: dict, metas: list[dict]) -> list[dict]:
    """The phase rows of `log` (read_phase_log) with their labelled robot episodes; plus a row for the
    episodes served after the learner's last phase and one for those no phase served, when not empty."""
    rows = [dict(p, episodes=[]) for p in log["phases"]]
    done = log.get("done")
    after = {"phase": "after", "iteration": None, "round": None, "version": None, "started": math.inf,
             "ended": None, "serving_version": done["version"] if done else None, "collected": [], "episodes": []}
    if done:
        after.update(started=done["time"], collected=list(done.get("collected") or []))
    unattributed = {"phase": "unattributed", "iteration": None, "round": None, "serving_version": None,
                    "version": None, "started": None, "ended": None, "collected": [], "episodes": []}
    serving: dict[int, list[dict]] = {}
    for p in [*rows, after]:
        if p["serving_version"] is not None:
            serving.setdefault(int(p["serving_version"]), []).append(p)
    for m in metas:
        candidates = serving.get(first_version(m))
        (_phase_for(candidates, m) if candidates else unattributed)["episodes"].append(m)
    return rows + [r for r in (after, unattributed) if r["episodes"]]


def _rate(metas: list[dict]) -> float | None:
    return float(np.mean([_is_success(m) for m in metas])) if metas else None


def summarize(rows: list[dict], rl_rounds: int | None = None) -> list[dict]:
    """JSON-ready rows: what each phase was, and its sampled and greedy episodes."""
    collected_in = {k: i for i, r in enumerate(rows) for k in r["collected"]}
    out = []
    for i, r in enumerate(rows):
        sampled = [m for m in r["episodes"] if not is_greedy(m)]
        greedy = [m for m in r["episodes"] if is_greedy(m)]
        keys = [episode_key(m) for m in r["episodes"]]
        out.append({
            "phase": r["phase"], "iteration": r["iteration"], "round": r["round"],
            "serving_version": r["serving_version"], "version": r["version"],
            "seconds": (r["ended"] - r["started"]) if r.get("ended") and r.get("started") else None,
            "sampled": len(sampled), "sampled_successes": sum(map(_is_success, sampled)),
            "greedy": len(greedy), "greedy_successes": sum(map(_is_success, greedy)),
            "episodes": keys,
            "hot_swapped": sum(len([v for v in m.get("policy_versions") or [] if v is not None and v >= 0]) > 1
                               for m in r["episodes"]),
            "ended_in_a_later_phase": sum(collected_in.get(k, i) > i for k in keys),
            "rl_rounds": rl_rounds,
        })
    return out


def _phase_label(row: dict) -> str:
    if row["phase"] == "rl":
        of = f"/{row['rl_rounds']}" if row.get("rl_rounds") else ""
        return f"RL round {row['round'] + 1}{of}"
    return {"sft": "SFT", "bootstrap": "Stage 0", "after": "after the last phase (learner finishing)",
            "unattributed": "served by no recorded phase"}.get(row["phase"], row["phase"])


def _pct(n: int, k: int) -> str:
    return f"{n} ({k / n:.0%})" if n else "-"


def phase_table(rows: list[dict]) -> str:
    lines = ["| iteration | phase | policy served | published | sampled episodes (success) | "
             "greedy episodes (success) | wall s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        it = "-" if r["iteration"] is None or r["phase"] == "bootstrap" else str(r["iteration"] + 1)
        served = f"v{r['serving_version']}" if r["serving_version"] is not None else "-"
        published = f"v{r['version']}" if r["version"] is not None else "-"
        secs = f"{r['seconds']:.0f}" if r["seconds"] is not None else "-"
        lines.append(f"| {it} | {_phase_label(r)} | {served} | {published} | "
                     f"{_pct(r['sampled'], r['sampled_successes'])} | {_pct(r['greedy'], r['greedy_successes'])} "
                     f"| {secs} |")
    return "\n".join(lines)


def _two_se(p1: float, p2: float, n1: int, n2: int) -> float:
    return 2 * math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)


def _points(delta: float) -> str:
    return f"{delta * 100:+.0f} points"


def headline(before: dict, after: dict, control: dict | None, loop_summary: str) -> str:
    """Greedy success on the same seeded episodes: Stage 0, the loop, and SFT alone at equal steps."""
    b, a = before["success_rate"], after["success_rate"]
    lines = [f"Greedy success on the same {before['n']} seeded mock episodes (in-process, after the run):", "",
             "| policy | greedy success | vs Stage 0 |", "|---|---|---|",
             f"| Stage 0 (v{before['version']}) | {b:.0%} | |",
             f"| the loop: {loop_summary} -> v{after['version']} | {a:.0%} | {_points(a - b)} |"]
    if control is None:
        lines += ["", f"**What the loop did:** {b:.0%} -> {a:.0%} ({_points(a - b)}). No SFT-only control was run "
                  "(`--no-control`), so this does not say how much of it the online data gave; docs/demo.md "
                  "has the control measured with bench.demo_tuning."]
        return "\n".join(lines)
    c = control["success_rate"]
    lines.append(f"| control: SFT phases alone ({control['phases']} x {control['sft_steps']} steps on the "
                 f"{control['demos']} demos, no online data, from the same v{before['version']}) | {c:.0%} | "
                 f"{_points(c - b)} |")
    noise = _two_se(a, c, after["n"], control["n"])
    verdict = ("within noise" if abs(a - c) <= noise else "beyond noise")
    lines += ["", f"**What the loop did:** {b:.0%} -> {a:.0%} ({_points(a - b)}); the SFT phases alone, at equal "
              f"SFT steps on the demos only, gave {_points(c - b)}. The online data (RL rounds and online "
              f"successes in SFT) added **{_points(a - c)}** over the control: {verdict} (2 standard errors of "
              f"the difference on {after['n']} + {control['n']} episodes: {noise * 100:.0f} points)."]
    return "\n".join(lines)


def _notes(rows: list[dict], unlabelled: int) -> str:
    swapped = sum(r["hot_swapped"] for r in rows)
    late = sum(r["ended_in_a_later_phase"] for r in rows)
    counted = sum(r["sampled"] + r["greedy"] for r in rows)
    return (f"Every labelled robot episode is counted once ({counted} in all), in the phase whose policy served "
            f"its first step (the phase it started in). {swapped} of them were served by two versions "
            f"(a hot-swap mid-episode) and {late} ended after the learner had moved to a later phase; both are "
            f"counted where they started. {unlabelled} episodes without a success/failure label "
            f"(aborted or discarded) are not counted. Sampled = the policy's exploration episodes (RL data); "
            f"greedy = the evaluation episodes the robots run while the learner is in SFT.")


def _collect(run_dir: Path) -> tuple[dict, list[dict], int]:
    store = EpisodeStore(run_dir / "episodes")
    robot = [m for m in store.list_episodes() if m.get("source") in ("online", "eval")]
    labelled = [m for m in robot if m.get("outcome") in LABELS]
    return read_phase_log(run_dir / PHASE_LOG), labelled, len(robot) - len(labelled)


def _loop_summary(rows: list[dict]) -> str:
    iterations = len({r["iteration"] for r in rows if r["phase"] == "sft" and r["version"] is not None})
    rounds = sum(r["phase"] == "rl" and r["version"] is not None for r in rows)
    sampled = sum(r["sampled"] for r in rows)
    return (f"{iterations} iteration(s): {rounds} RL rounds, {sampled} sampled episodes collected, "
            f"{iterations} SFT phase(s)")


def write_report(run_dir: Path, before: dict, after: dict, control: dict | None = None,
                 rl_rounds: int | None = None, complete: bool = True, note: str = "") -> str:
    """report.md, report.json and success_curve.png in run_dir; returns the markdown body."""
    log, metas, unlabelled = _collect(run_dir)
    rows = summarize(attribute(log, metas), rl_rounds)
    parts = []
    if not complete:
        parts.append(f"**INCOMPLETE RUN -- not a result.** {note}")
    parts += [phase_table(rows), _notes(rows, unlabelled)]
    if complete:
        parts.append(headline(before, after, control, _loop_summary(rows)))
    body = "\n\n".join(parts)
    plot_curve(run_dir / "success_curve.png", rows, metas, before, after, control, complete)
    (run_dir / "report.md").write_text("# vlaloop demo report\n\n" + body + "\n\n![curve](success_curve.png)\n")
    (run_dir / "report.json").write_text(json.dumps(
        {"complete": complete, "before": before, "after": after, "control": control, "phases": rows,
         "unlabelled": unlabelled}, indent=1))
    return body


def plot_curve(path: Path, rows: list[dict], metas: list[dict], before: dict, after: dict,
               control: dict | None, complete: bool = True) -> None:
    """Episodes laid out phase by phase (the learner's order; within a phase, by completion), each
    phase shaded, its sampled and greedy success rates drawn across it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {episode_key(m): m for m in metas}
    fig, ax = plt.subplots(figsize=(10, 5.4), dpi=110)
    x0 = 0
    for r in rows:
        eps = sorted((by_key[k] for k in r["episodes"]), key=lambda m: m.get("finished", 0))
        if not eps:
            continue
        x1 = x0 + len(eps)
        shade = {"rl": "#e8f1fb", "sft": "#f2e6ff"}.get(r["phase"], "#eeeeee")
        ax.axvspan(x0 + 0.5, x1 + 0.5, color=shade, lw=0)
        ax.axvline(x1 + 0.5, color="#999999", lw=0.6)
        tag = f"{r['iteration'] + 1}:{'RL' + str(r['round'] + 1) if r['phase'] == 'rl' else r['phase'].upper()}" \
            if r["iteration"] is not None else r["phase"]
        ax.text((x0 + x1) / 2 + 0.5, 1.02, tag, ha="center", va="bottom", fontsize=7)
        xs = np.arange(x0 + 1, x1 + 1)
        for greedy, color in ((False, "#1f77b4"), (True, "#7b2cbf")):
            sel = [i for i, m in enumerate(eps) if is_greedy(m) == greedy]
            if not sel:
                continue
            ys = np.array([_is_success(eps[i]) for i in sel], dtype=float)
            ax.scatter(xs[sel], ys * 0.96 + 0.02, s=6, color=color, alpha=0.35)
            if len(sel) < MIN_EPISODES_FOR_A_RATE:  # a straggler or two: points only, no rate across the phase
                continue
            ax.hlines(ys.mean(), x0 + 0.5, x1 + 0.5, color=color, lw=2.2,
                      label="greedy success per phase (eval episodes during SFT)" if greedy
                      else "sampled success per phase (RL episodes)")
        x0 = x1
    final = "final" if complete else "last published (run incomplete)"
    for value, color, text in ((before, "#d62728", "Stage 0"), (after, "#2ca02c", final),
                               (control, "#ff7f0e", "SFT-only control")):
        if value is not None:
            ax.axhline(value["success_rate"], color=color, ls="--", lw=1.2,
                       label=f"{text} greedy, {value['n']} seeds: {value['success_rate']:.0%}")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    ax.legend(uniq.values(), uniq.keys(), loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7)
    ax.set(xlabel="robot episode (phase by phase, as the learner recorded them; within a phase by completion)",
           ylabel="success", ylim=(-0.05, 1.12), xlim=(0.5, max(x0, 1) + 0.5))
    title = "vlaloop demo: iRe-VLA on the mock task (RL rounds on the head, LoRA SFT)"
    ax.set_title(title if complete else "INCOMPLETE RUN, not a result -- " + title, fontsize=10, pad=14)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
