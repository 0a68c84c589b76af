"""`python -m bench.per_task_eval --out TABLE_DIR`: the final versions of a MetaWorld learning table,
task by task, on fresh seeds -- which task moved, with a confidence interval.

The table itself evaluates each split on 24 fixed episodes (8 per RL task), enough to follow a
curve, not to tell two methods apart on one task. This evaluates the last published version of
every finished (method, seed) job, and its seed's Stage 0, on `--n` greedy episodes per task of a
split, on seeds disjoint from the table's (`--eval-seed`, default 20 000), and prints successes
with a 95 % Wilson interval per task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate k / n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def evaluate_version(checkpoints: Path, tasks: tuple[str, ...], n: int, seed: int,
                     max_steps: int | None = None) -> dict[str, int]:
    """Greedy successes of the registry's latest version, per task, on seeds seed..seed+n-1."""
    from learner.evaluate import rollout
    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    policy = Policy.load(CheckpointRegistry(checkpoints))
    return {t: int(rollout(policy, range(seed, seed + n), t, "greedy", backend="metaworld",
                           max_steps=max_steps).success.sum()) for t in tasks}


def runs_to_evaluate(out: Path, methods: list[str] | None, seeds: list[int] | None) -> list[tuple[str, Path]]:
    """(label, checkpoints dir): each seed's Stage 0, then every finished job of the table."""
    rows = []
    results = sorted((out / "results").glob("*-s*.json"))
    picked = [json.loads(p.read_text()) for p in results]
    picked = [r for r in picked if (methods is None or r["method"] in methods) and (seeds is None or r["seed"] in seeds)]
    for s in sorted({r["seed"] for r in picked}):
        rows.append((f"Stage 0 s{s}", out / "stage0" / f"s{s}" / "checkpoints"))
        rows += [(f"{r['method']} s{s}", out / "runs" / f"{r['method']}-s{s}" / "checkpoints")
                 for r in picked if r["seed"] == s]
    return rows


def main(argv: list[str] | None = None) -> int:
    import sim.metaworld  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)
    from sim.metaworld.tasks import TASK_SETS

    p = argparse.ArgumentParser(prog="bench.per_task_eval", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="a bench.learning --metaworld(-long) output dir")
    p.add_argument("--split", default="rl", help="the task set's split whose tasks are evaluated")
    p.add_argument("--n", type=int, default=40, help="greedy episodes per task")
    p.add_argument("--eval-seed", type=int, default=20_000)
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    args = p.parse_args(argv)
    out = Path(args.out)
    cfg = json.loads((out / "config.json").read_text())
    tasks = TASK_SETS[cfg["task"]][args.split]
    rows = runs_to_evaluate(out, args.methods, args.seeds)
    if not rows:
        raise SystemExit(f"no finished job in {out}/results")
    print(f"Greedy successes of each final version, {args.n} episodes per task (seeds {args.eval_seed}.."
          f"{args.eval_seed + args.n - 1}), 95 % Wilson interval\n")
    print("| version | " + " | ".join(tasks) + " | all |")
    print("|---|" + "---|" * (len(tasks) + 1))
    for label, checkpoints in rows:
        wins = evaluate_version(checkpoints, tasks, args.n, args.eval_seed, cfg.get("max_steps") or None)
        total = sum(wins.values())
        cells = [f"{k}/{args.n} ({wilson(k, args.n)[0]:.2f}–{wilson(k, args.n)[1]:.2f})" for k in wins.values()]
        lo, hi = wilson(total, args.n * len(tasks))
        print(f"| {label} | " + " | ".join(cells) + f" | **{total / (args.n * len(tasks)):.2f}** ({lo:.2f}–{hi:.2f}) |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
