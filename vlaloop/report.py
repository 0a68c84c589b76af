"""The demo's report: greedy success per task against episodes for the loop and the control, what
the operator did, a table per learner phase, and a PNG, from what the run stored.

Greedy success comes from the demo's own evaluations (fixed seeds per task, the same for every
checkpoint and the control). The operator's work comes from the stored episodes: the takeovers the
robot client counted (``extra.counters.takeovers``) and the steps it stored as interventions.

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


def is_success(meta: dict) -> bool:
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
    return float(np.mean([is_success(m) for m in metas])) if metas else None


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
            "sampled": len(sampled), "sampled_successes": sum(map(is_success, sampled)),
            "greedy": len(greedy), "greedy_successes": sum(map(is_success, greedy)),
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


def attribution_notes(rows: list[dict], unlabelled: int) -> str:
    swapped = sum(r["hot_swapped"] for r in rows)
    late = sum(r["ended_in_a_later_phase"] for r in rows)
    counted = sum(r["sampled"] + r["greedy"] for r in rows)
    return (f"Every labelled robot episode is counted once ({counted} in all), in the phase whose policy served "
            f"its first step (the phase it started in). {swapped} of them were served by two versions "
            f"(a hot-swap mid-episode) and {late} ended after the learner had moved to a later phase; both are "
            f"counted where they started. {unlabelled} episodes without a success/failure label "
            f"(aborted or discarded) are not counted. Sampled = the policy's exploration episodes (RL data); "
            f"greedy = the evaluation episodes the robots run while the learner is in SFT.")


def collect_episodes(run_dir: Path) -> tuple[dict, list[dict], int]:
    store = EpisodeStore(run_dir / "episodes")
    robot = [m for m in store.list_episodes() if m.get("source") in ("online", "eval")]
    labelled = [m for m in robot if m.get("outcome") in LABELS]
    return read_phase_log(run_dir / PHASE_LOG), labelled, len(robot) - len(labelled)


TAKEOVER_S = 2.0  # operator seconds per takeover besides its steps: notice, take the device, hand back
TASKS = {"demo": "tasks with demos", "rl": "new task (no demos)"}


def is_new_task(meta: dict, new_task: tuple[str, ...]) -> bool:
    words = str(meta.get("instruction", "")).lower().split()
    return any(colour in words for colour in new_task)


def operator_rows(rows: list[dict], metas: list[dict], new_task: tuple[str, ...], period_s: float) -> list[dict]:
    """Per RL round: its sampled episodes, the operator's takeovers and steps in them, the operator
    seconds (steps x period + TAKEOVER_S per takeover; cumulative too), the new task's share."""
    by_key = {episode_key(m): m for m in metas}
    out, cumulative, episodes = [], 0.0, 0
    for r in rows:
        if r["phase"] != "rl":
            continue
        sampled = [by_key[k] for k in r["episodes"] if k in by_key and not is_greedy(by_key[k])]
        takeovers = sum(int((m.get("extra") or {}).get("counters", {}).get("takeovers", 0)) for m in sampled)
        driven = sum(int(m.get("intervention_steps") or 0) for m in sampled)
        steps = sum(int(m.get("n_steps") or 0) for m in sampled)
        new = [m for m in sampled if is_new_task(m, new_task)]
        seconds = driven * period_s + takeovers * TAKEOVER_S
        cumulative += seconds
        episodes += len(sampled)
        out.append({"iteration": r["iteration"], "round": r["round"], "episodes": len(sampled),
                    "episodes_total": episodes, "takeovers": takeovers,
                    "takeovers_per_episode": takeovers / len(sampled) if sampled else None,
                    "intervention_steps": driven, "steps": steps,
                    "intervention_fraction": driven / steps if steps else None,
                    "operator_s": seconds, "operator_s_total": cumulative,
                    "new_task_episodes": len(new), "new_task_successes": sum(map(is_success, new)),
                    "new_task_driven": sum(bool(m.get("intervention_steps")) for m in new),
                    # the policy's own successes: no operator step in the episode
                    "new_task_alone": sum(is_success(m) and not m.get("intervention_steps") for m in new)})
    return out


def operator_table(ops: list[dict], rl_rounds: int | None, new_task: bool = True) -> str:
    """One row per RL round; `new_task`: the demo's column for the task it has no demos of."""
    head = ["iteration", "RL round", "sampled episodes", "takeovers (per episode)", "operator steps (% of steps)",
            "operator s (total)"] + (["new task: episodes, taken over, successes (by the policy alone)"]
                                     if new_task else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    of = f"/{rl_rounds}" if rl_rounds else ""
    for o in ops:
        per = f"{o['takeovers']} ({o['takeovers_per_episode']:.2f})" if o["episodes"] else "-"
        frac = f"{o['intervention_steps']} ({o['intervention_fraction']:.1%})" if o["steps"] else "-"
        cells = [str(o["iteration"] + 1), f"{o['round'] + 1}{of}", str(o["episodes"]), per, frac,
                 f"{o['operator_s']:.0f} ({o['operator_s_total']:.0f})"]
        if new_task:
            cells.append(f"{o['new_task_episodes']}, {o['new_task_driven']}, {o['new_task_successes']} "
                         f"({o['new_task_alone']})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _checkpoint_label(point: dict, rl_rounds: int | None) -> str:
    if point["phase"] == "bootstrap":
        return f"Stage 0 (v{point['version']})"
    what = f"after {rl_rounds or ''} RL rounds".replace("  ", " ") if point["phase"] == "rl" else "after SFT"
    return f"iteration {point['iteration'] + 1}, {what} (v{point['version']})"


def success_table(curve: list[dict], control: dict | None, rl_rounds: int | None) -> str:
    """Greedy success per task at each evaluated checkpoint; the control next to the SFT checkpoints."""
    n = curve[0]["n"]
    lines = [f"Greedy success, {n} fixed-seed episodes per task (the same seeds for every row and the control):", "",
             "| checkpoint | sampled episodes trained on | new task (no demos) | tasks with demos | "
             "control: new task | control: tasks with demos |", "|---|---|---|---|---|---|"]
    sft_i = 0
    for p in curve:
        c = ("-", "-")
        if control is not None and p["phase"] == "bootstrap":
            c = (f"{p['rl']:.0%}", f"{p['demo']:.0%}")  # the control starts from the same Stage 0
        elif control is not None and p["phase"] == "sft" and sft_i < len(control["curve"]):
            cp = control["curve"][sft_i]
            c = (f"{cp['rl']:.0%}", f"{cp['demo']:.0%}")
            sft_i += 1
        lines.append(f"| {_checkpoint_label(p, rl_rounds)} | {p['episodes']} | {p['rl']:.0%} | {p['demo']:.0%} | "
                     f"{c[0]} | {c[1]} |")
    return "\n".join(lines)


def headline(curve: list[dict], control: dict | None, ops: list[dict], new_task: tuple[str, ...],
             operator: str) -> str:
    """One plain line: the new task before and after, what the operator spent, and the control."""
    first, last = curve[0], curve[-1]
    task = " / ".join(new_task)
    episodes = sum(o["episodes"] for o in ops)
    takeovers = sum(o["takeovers"] for o in ops)
    driven = sum(o["intervention_steps"] for o in ops)
    steps = sum(o["steps"] for o in ops)
    seconds = sum(o["operator_s"] for o in ops)
    if operator == "scripted":
        who = (f"with a scripted operator stepping in {takeovers} times ({driven} of {steps} steps, "
               f"{driven / steps if steps else 0:.1%}; {seconds:.0f} operator-seconds)")
    else:
        who = "with no operator"
    line = (f"**The new task ({task} block, no demos): greedy success {first['rl']:.0%} -> {last['rl']:.0%} "
            f"after {last['episodes']} sampled robot episodes ({episodes} collected) {who}")
    if control is not None:
        c = control["curve"][-1]
        line += (f"; the control (the same {control['phases']} SFT phases on the demos alone, no online data, no "
                 f"operator) {c['rl']:.0%}.**")
        line += (f" Tasks with demos: {first['demo']:.0%} -> {last['demo']:.0%} (control {c['demo']:.0%}). "
                 f"Each rate is {last['n']} greedy episodes on fixed seeds: 2 standard errors are up to "
                 f"{200 * math.sqrt(0.25 / last['n']):.0f} points.")
    else:
        line += f".** Tasks with demos: {first['demo']:.0%} -> {last['demo']:.0%}. No control was run (`--no-control`)."
    return line


def run_robot_time(run_dir: Path, period_s: float):
    """What the run's stored episodes cost the arm and its operator (episodes.robot_time): every robot
    episode (online and eval, aborted ones too) at its control period + a 10 s reset each, operator
    steps + TAKEOVER_S per takeover; the expert demos apart."""
    from episodes.robot_time import REAL_ARM_RESET_S, RobotTimeConfig, robot_time

    store = EpisodeStore(run_dir / "episodes")
    cfg = RobotTimeConfig(period_s=period_s, reset_s=REAL_ARM_RESET_S, takeover_s=TAKEOVER_S)
    return robot_time(store.list_episodes(), cfg, store)


def robot_time_line(t) -> str:
    """One sentence: robot-minutes and operator-minutes of the run's robot episodes."""
    return (f"Robot time: {t.episodes} robot episodes, {t.steps} executed steps = **{t.robot_s / 60:.1f} "
            f"robot-minutes** ({t.control_s / 60:.1f} min of control + {t.reset_s / 60:.1f} min of resets at "
            f"10 s each: the simulators reset instantly but are charged a real arm's reset) and "
            f"**{t.operator_s / 60:.1f} operator-minutes** (operator steps + {TAKEOVER_S:g} s per takeover); "
            f"expert demos apart: {t.demo_episodes} episodes, {t.demo_s / 60:.1f} min.")


def write_report(run_dir: Path, curve: list[dict], control: dict | None, rl_rounds: int | None,
                 new_task: tuple[str, ...], period_s: float, operator: str = "scripted", seed: int = 0,
                 wall_s: float | None = None, complete: bool = True, note: str = "") -> str:
    """report.md, report.json and success_curve.png in run_dir; returns the markdown body."""
    log, metas, unlabelled = collect_episodes(run_dir)
    rows = summarize(attribute(log, metas), rl_rounds)
    ops = operator_rows(rows, metas, new_task, period_s)
    spent = run_robot_time(run_dir, period_s)
    parts = []
    if not complete:
        parts.append(f"**INCOMPLETE RUN -- not a result.** {note}")
    else:
        parts.append(headline(curve, control, ops, new_task, operator))
    parts += [robot_time_line(spent), success_table(curve, control, rl_rounds),
              "What the operator did, per RL round (sampled episodes only; greedy evaluation episodes are never "
              f"driven). Operator seconds = operator steps x {period_s:g} s + {TAKEOVER_S:g} s per takeover:\n\n"
              + operator_table(ops, rl_rounds),
              "The learner's phases:\n\n" + phase_table(rows), attribution_notes(rows, unlabelled)]
    if wall_s is not None:
        parts.append(f"Seed {seed}; wall time {wall_s:.0f} s.")
    body = "\n\n".join(parts)
    plot_curve(run_dir / "success_curve.png", curve, control, ops, new_task, complete)
    (run_dir / "report.md").write_text("# vlaloop demo report\n\n" + body + "\n\n![curve](success_curve.png)\n")
    (run_dir / "report.json").write_text(json.dumps(
        {"complete": complete, "seed": seed, "wall_s": wall_s, "operator": operator, "new_task": list(new_task),
         "period_s": period_s, "rl_rounds": rl_rounds, "note": note, "curve": curve, "control": control, "operator_rounds": ops, "robot_time": spent.to_json(), "phases": rows, "unlabelled": unlabelled},
        indent=1))
    return body


def plot_operator(ax2, ops: list[dict]) -> None:
    """The operator's takeovers per sampled episode per RL round, and its cumulative seconds."""
    if ops:
        xo = [o["episodes_total"] for o in ops]
        width = 0.6 * min(o["episodes"] for o in ops if o["episodes"]) if any(o["episodes"] for o in ops) else 1
        ax2.bar(xo, [o["takeovers_per_episode"] or 0 for o in ops], width=width, align="center",
                color="#ff7f0e", alpha=0.8, label="takeovers per sampled episode (per RL round)")
        ax2.set(xlabel="sampled robot episodes", ylabel="takeovers per episode")
        twin = ax2.twinx()
        twin.plot(xo, [o["operator_s_total"] for o in ops], color="#2ca02c", marker="o", label="operator seconds (total)")
        twin.set_ylabel("operator seconds, cumulative")
        twin.set_ylim(bottom=0)
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax2.set_title("the operator's work")
    ax2.grid(alpha=0.3)


def plot_curve(path: Path, curve: list[dict], control: dict | None, ops: list[dict], new_task: tuple[str, ...],
               complete: bool = True) -> None:
    """Left: greedy success per task at each checkpoint (with the sampled episodes trained on by then),
    the loop solid, the control dashed.
    Right: the operator's takeovers per episode per RL round and its cumulative seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), dpi=110)
    colours = {"rl": "#d62728", "demo": "#1f77b4"}
    xs = list(range(len(curve)))  # checkpoints in the learner's order; the ticks say the episodes
    for split, name in TASKS.items():
        ax.plot(xs, [p[split] for p in curve], marker="o", color=colours[split], lw=2, label=f"loop: {name}")
    if control is not None:
        sft_x = [x for x, p in zip(xs, curve, strict=True) if p["phase"] == "sft"][:len(control["curve"])]
        for split, name in TASKS.items():
            ax.plot([0, *sft_x], [curve[0][split], *[c[split] for c in control["curve"][:len(sft_x)]]],
                    marker="s", ls="--", color=colours[split], alpha=0.7,
                    label=f"control (SFT on demos only): {name}")

    def tick(p: dict) -> str:
        if p["phase"] == "bootstrap":
            return "Stage 0\n0 ep."
        return f"{p['iteration'] + 1}: {'RL' if p['phase'] == 'rl' else 'SFT'}\n{p['episodes']} ep."

    ax.set_xticks(xs, [tick(p) for p in curve], fontsize=8)
    ax.set(xlabel="checkpoint (sampled robot episodes trained on)", ylabel="greedy success",
           ylim=(-0.03, 1.03), title=f"greedy success, {curve[0]['n']} fixed seeds per task")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    plot_operator(ax2, ops)
    title = f"vlaloop demo: learning a new task ({' / '.join(new_task)}) on the job"
    fig.suptitle(title if complete else "INCOMPLETE RUN, not a result -- " + title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
