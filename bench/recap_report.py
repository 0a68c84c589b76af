"""`python -m bench.recap_report --out DIR`: RECAP's throughput table and value-function plot from a
finished `bench.learning` run (docs/recap.md).

For every `METHOD-sSEED` run under DIR/runs it loads the final version and runs greedy episodes on
the evaluation seeds of each split the policy is trained on (`demo`, `rl`), recording success AND
the steps each episode took, so the table has what a success rate hides:

* successes per hour of robot time (every step costs 1 / rate_hz seconds, 10 Hz as the robot
  config's default; a failed episode costs its full step limit);
* mean steps to success.

Any method's final version is measured as it is served (an AWR run's `awr` version is an ordinary
policy: no variants). For the RECAP runs it also serves the same weights two other ways -- without the indicator (the
unconditioned policy the dropout trained) and with classifier-free guidance beta -- to show whether
the indicator changes what the policy does. And it plots the value function along a failed and a
successful online episode of one task from the last labels file (`--plot`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SPLITS = ("demo", "rl")
EVAL_SEED = 10_000


def throughput(policy, n: int, task: str, split: str, hz: float) -> dict:
    from learner.evaluate import rollout

    res = rollout(policy, range(EVAL_SEED, EVAL_SEED + n), task, "greedy", split=split)
    hours = res.steps.sum() / hz / 3600
    won = res.steps[res.success]
    return {"success": float(res.success.mean()), "successes_per_hour": float(res.success.sum() / hours),
            "steps_to_success": float(won.mean()) if len(won) else None, "n": n}


def served_as(policy, conditioning: dict | None):
    """The same weights served with other advantage metadata (None: without the indicator)."""
    from vla.advantage import META_KEY
    from vla.policy import Policy

    meta = {k: v for k, v in policy.meta.items() if k != META_KEY}
    if conditioning is not None:
        meta[META_KEY] = conditioning
    return Policy(policy.model, policy.norm, policy.version, meta=meta)


def measure(out: Path, n: int, task: str, hz: float, beta: float) -> list[dict]:
    import torch

    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    torch.set_num_threads(1)
    rows = []
    for run in sorted((out / "runs").iterdir()):
        method, seed = run.name.rsplit("-s", 1)
        policy = Policy.load(CheckpointRegistry(run / "checkpoints"))
        variants = {method: policy}
        if policy.advantage is not None:  # served advantage-conditioned: compare without and with guidance
            variants["recap, no indicator"] = served_as(policy, None)
            variants[f"recap, guidance {beta:g}"] = served_as(policy, {"format": 1, "indicator": True, "guidance": beta})
        for name, p in variants.items():
            row = {"method": name, "seed": int(seed), "version": policy.version,
                   **{split: throughput(p, n, task, split, hz) for split in SPLITS}}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| policy | seeds | success (demo / RL-only tasks) | successes per robot-hour (demo / RL) | "
             "mean steps to success (demo / RL) |", "|---|---|---|---|---|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        cells = [_cell(rs, "success", "{:.2f} ± {:.2f}"), _cell(rs, "successes_per_hour", "{:.0f} ± {:.0f}"),
                 _cell(rs, "steps_to_success", "{:.1f} ± {:.1f}")]
        lines.append(f"| `{method}` | {len(rs)} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _cell(rows: list[dict], key: str, fmt: str) -> str:
    """mean ± std over seeds of `key`, per split (demo / RL)."""
    parts = []
    for split in SPLITS:
        vals = [r[split][key] for r in rows if r[split][key] is not None]
        parts.append(fmt.format(np.mean(vals), np.std(vals)) if vals else "–")
    return " / ".join(parts)


def plot_values(labels_file: Path, path: Path) -> None:
    """Predicted value and true return along the longest failed and the longest successful online
    episode of the task with the most successes; positive-labelled decisions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    record = json.loads(labels_file.read_text())
    online = {k: e for k, e in record["episodes"].items() if e["source"] == "online"}
    counts: dict[str, int] = {}
    for e in online.values():
        counts[e["task"]] = counts.get(e["task"], 0) + int(e["success"])
    task = max(counts, key=counts.get)
    picks = {}
    for outcome in (True, False):
        group = [e for e in online.values() if e["task"] == task and e["success"] == outcome]
        if group:
            picks["success" if outcome else "failure"] = max(group, key=lambda e: len(e["steps"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, e in picks.items():
        color = "tab:green" if name == "success" else "tab:red"
        steps = np.array(e["steps"])
        ax.plot(steps, e["value"], marker="o", color=color, label=f"{name}: predicted value V")
        ax.plot(steps, e["target"], ls="--", color=color, alpha=0.6, label=f"{name}: true return G")
        pos = np.array(e["positive"], bool)
        ax.scatter(steps[pos], np.array(e["value"])[pos], s=120, facecolors="none", edgecolors="k")
    ax.scatter([], [], s=120, facecolors="none", edgecolors="k", label="labelled positive")
    ax.set_xlabel("step")
    ax.set_ylabel("normalized return (0: success now)")
    ax.set_ylim(-1.05, 0.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"RECAP value function, iteration {record['iteration']} (task {task})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.recap_report", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a bench.learning output dir with RECAP runs")
    p.add_argument("--n", type=int, default=50, help="greedy episodes per split per policy")
    p.add_argument("--task", default="reach_slots")
    p.add_argument("--hz", type=float, default=10.0, help="control rate: seconds of robot time per step")
    p.add_argument("--beta", type=float, default=2.0, help="guidance weight of the guided variant")
    p.add_argument("--plot", default=None, help="PNG of the value function along two episodes (recap-s0)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.plot:
        labels = sorted((out / "runs" / "recap-s0" / "recap").glob("labels-it*.json"))
        if not labels:
            raise SystemExit(f"no RECAP labels under {out}/runs/recap-s0/recap")
        plot_values(labels[-1], Path(args.plot))
        print(f"value plot: {args.plot} (from {labels[-1]})")
    rows = measure(out, args.n, args.task, args.hz, args.beta)
    text = table(rows)
    (out / "recap_throughput.md").write_text(text + "\n")
    (out / "recap_throughput.json").write_text(json.dumps(rows, indent=1))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
