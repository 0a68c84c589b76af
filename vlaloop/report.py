"""The demo's report: a success-rate table per phase and a PNG curve, from what the run stored.

Phases are read off the episode store in time order: a run of online (sampled) episodes is an RL
phase; the run of eval (greedy) episodes that follows is the SFT phase of the same iteration
(During SFT the robots run greedy evaluation episodes with the last policy).
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import numpy as np

from episodes.store import EpisodeStore


def _is_success(meta: dict) -> bool:
    return meta.get("outcome") == "success"


def phase_blocks(metas: list[dict]) -> list[dict]:
    """Consecutive online/eval episodes grouped into RL / SFT phases with their success rates."""
    blocks, iteration = [], 1
    labelled = [m for m in metas if m.get("outcome") in ("success", "failure")]
    for source, group in groupby(labelled, key=lambda m: m.get("source")):
        eps = list(group)
        versions = sorted({v for m in eps for v in (m.get("policy_versions") or []) if v is not None})
        kind = "SFT (greedy eval)" if source == "eval" else "RL (sampled)"
        blocks.append({"iteration": iteration, "phase": kind, "episodes": len(eps),
                       "successes": sum(map(_is_success, eps)), "versions": versions,
                       "success_rate": float(np.mean([_is_success(m) for m in eps]))})
        if source == "eval":
            iteration += 1
    return blocks


def _versions(vs: list[int]) -> str:
    if not vs:
        return "-"
    return f"v{vs[0]}" if len(vs) == 1 else f"v{vs[0]}..v{vs[-1]}"


def format_table(before: dict, after: dict, blocks: list[dict]) -> str:
    rows = [("before: bootstrapped policy (greedy, in-process)", f"v{before['version']}", before["n"],
             before["success_rate"])]
    rows += [(f"iteration {b['iteration']}: {b['phase']}", _versions(b["versions"]), b["episodes"],
              b["success_rate"]) for b in blocks]
    rows.append(("after: final policy (greedy, in-process)", f"v{after['version']}", after["n"],
                 after["success_rate"]))
    w = max(len(r[0]) for r in rows)
    lines = [f"| {'phase'.ljust(w)} | policy     | episodes | success |",
             f"|{'-' * (w + 2)}|------------|----------|---------|"]
    lines += [f"| {p.ljust(w)} | {v:<10} | {n:>8} | {s:>6.0%}  |" for p, v, n, s in rows]
    delta = after["success_rate"] - before["success_rate"]
    lines.append(f"\ngreedy success on the same {before['n']} seeded episodes: "
                 f"{before['success_rate']:.0%} -> {after['success_rate']:.0%} ({delta:+.0%})")
    return "\n".join(lines)


def plot_curve(path: Path, metas: list[dict], before: dict, after: dict, window: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = [m for m in metas if m.get("outcome") in ("success", "failure")]
    x = np.arange(1, len(labelled) + 1)
    y = np.array([_is_success(m) for m in labelled], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=110)
    start = 0
    for source, group in groupby(labelled, key=lambda m: m.get("source")):
        n = len(list(group))
        if source == "eval":
            ax.axvspan(start + 0.5, start + n + 0.5, color="#f2e6ff", label="SFT phase (greedy eval episodes)")
            ax.hlines(y[start:start + n].mean(), start + 0.5, start + n + 0.5, color="#7b2cbf", lw=2)
        start += n
    if len(y):
        k = min(window, len(y))
        ma = np.convolve(y, np.ones(k) / k, mode="valid")
        ax.plot(x[k - 1:], ma, color="#1f77b4", lw=2, label=f"online success (moving avg, {k} episodes)")
        ax.scatter(x, y, s=8, color="#1f77b4", alpha=0.35)
    ax.axhline(before["success_rate"], color="#d62728", ls="--",
               label=f"bootstrapped v{before['version']} greedy: {before['success_rate']:.0%}")
    ax.axhline(after["success_rate"], color="#2ca02c", ls="--",
               label=f"final v{after['version']} greedy: {after['success_rate']:.0%}")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    ax.legend(uniq.values(), uniq.keys(), loc="lower right", fontsize=8)
    ax.set(xlabel="episode (all robots, in order of completion)", ylabel="success", ylim=(-0.05, 1.05),
           title="vlaloop demo: iRe-VLA on the mock task (RL on the head <-> LoRA SFT)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(run_dir: Path, before: dict, after: dict) -> str:
    store = EpisodeStore(run_dir / "episodes")
    metas = [m for m in store.list_episodes() if m.get("source") in ("online", "eval")]
    blocks = phase_blocks(metas)
    table = format_table(before, after, blocks)
    plot_curve(run_dir / "success_curve.png", metas, before, after)
    (run_dir / "report.md").write_text("# vlaloop demo report\n\n" + table + "\n\n![curve](success_curve.png)\n")
    return table
