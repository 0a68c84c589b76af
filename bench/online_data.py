"""`python -m bench.online_data --out TABLE_DIR`: what the online episodes of a learning table gave
the SFT phases, per RL task -- is the SFT data growing, and do the online successes look like the
demos?

For every run of the table (OUT/runs/METHOD-sSEED, from `bench.learning`), read back from its
episode store, per task of the split the runs collected on (MetaWorld `bench`: the RL tasks; mock:
the instruction's task):

* the expert demos the SFT phases always had: how many, and their mean length;
* per iteration (online episodes in the order they were made, `rounds x episodes_per_round` each):
  episodes sampled, successes, and the successes' mean length;
* the SFT samples the online successes add by the end (every step of a success is one sample),
  against the demos' own samples of that task.

A success much longer than the demos is the policy finding its way by accident: a sample the SFT
phase would rather not imitate step by step. An RL task whose successes stay few is one the SFT
phases never get new data for, whatever the RL stage did.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from episodes.store import EpisodeStore


def run_stats(run_dir: Path, per_iteration: int) -> dict[str, dict]:
    """Per task: demos (count, mean steps, steps) and per-iteration online statistics."""
    metas = EpisodeStore(run_dir / "episodes").list_episodes()
    online = sorted((m for m in metas if m.get("source") == "online"), key=lambda m: m["created"])
    out: dict[str, dict] = defaultdict(lambda: {"demos": 0, "demo_steps": [], "iterations": []})
    for m in metas:
        if m.get("source") == "expert" and m.get("outcome") == "success":
            out[m["task"]]["demos"] += 1
            out[m["task"]]["demo_steps"].append(m["n_steps"])
    n_iter = -(-len(online) // per_iteration) if online else 0
    for task in {m["task"] for m in online}:
        for it in range(n_iter):
            chunk = [m for m in online[it * per_iteration:(it + 1) * per_iteration] if m["task"] == task]
            wins = [m["n_steps"] for m in chunk if m["outcome"] == "success"]
            out[task]["iterations"].append({"episodes": len(chunk), "successes": len(wins), "success_steps": wins})
    return dict(out)


def format_report(table_dir: Path, per_iteration: int) -> str:
    runs = sorted(p for p in (table_dir / "runs").iterdir() if p.is_dir() and (p / "episodes").exists())
    lines = [f"Online data per run and task ({table_dir}; iterations of {per_iteration} online episodes, "
             "tasks the runs sampled online)", "",
             "| run | task | demos (mean steps) | per iteration: successes / episodes (successes' mean steps) | "
             "SFT samples: online successes / demos |", "|---|---|---|---|---|"]
    for run_dir in runs:
        stats = run_stats(run_dir, per_iteration)
        for task, s in sorted(stats.items()):
            if not s["iterations"]:
                continue
            demo_mean = f"{np.mean(s['demo_steps']):.0f}" if s["demo_steps"] else "–"
            cells = [f"{x['successes']} / {x['episodes']}"
                     + (f" ({np.mean(x['success_steps']):.0f})" if x["success_steps"] else "")
                     for x in s["iterations"]]
            online_steps = sum(sum(x["success_steps"]) for x in s["iterations"])
            lines.append(f"| `{run_dir.name}` | {task} | {s['demos']} ({demo_mean}) | {' · '.join(cells)} | "
                         f"{online_steps} / {sum(s['demo_steps'])} |")
        lines.append(_all_tasks_row(run_dir.name, stats))
    return "\n".join(lines)


def _all_tasks_row(run: str, stats: dict[str, dict]) -> str:
    """The run summed over the tasks it sampled: sampled success per iteration, and the share of
    the SFT samples (every demo of every task + every online success) that are online successes."""
    sampled = [s["iterations"] for s in stats.values() if s["iterations"]]
    per_it = [(sum(its[k]["successes"] for its in sampled), sum(its[k]["episodes"] for its in sampled))
              for k in range(max((len(its) for its in sampled), default=0))]
    cells = [f"{w} / {n} ({100 * w / n:.0f} %)" if n else "–" for w, n in per_it]
    online = sum(sum(x["success_steps"]) for its in sampled for x in its)
    demos = sum(sum(s["demo_steps"]) for s in stats.values())
    share = f" ({100 * online / (online + demos):.0f} % online)" if online + demos else ""
    return f"| `{run}` | **all tasks** | {sum(s['demos'] for s in stats.values())} | {' · '.join(cells)} | " \
           f"{online} / {demos}{share} |"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.online_data", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a bench.learning output dir (its runs/ and config.json)")
    p.add_argument("--per-iteration", type=int, default=0,
                   help="online episodes per iteration (0: rounds x episodes_per_round of OUT/config.json)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if not (out / "runs").is_dir():
        raise SystemExit(f"{out} has no runs/ (not a bench.learning output dir)")
    per_iteration = args.per_iteration
    if not per_iteration:
        cfg = json.loads((out / "config.json").read_text())
        per_iteration = cfg["rounds"] * cfg["episodes_per_round"]
    print(format_report(out, per_iteration))
    return 0


if __name__ == "__main__":
    sys.exit(main())
