"""`python -m bench.per_task_eval --out TABLE_DIR`: the final versions of a MetaWorld learning table,
task by task, on fresh seeds -- which task moved, with a confidence interval.

The table itself evaluates each split on 24 fixed episodes (8 per RL task), enough to follow a
curve, not to tell two methods apart on one task. This evaluates the last published version of
every finished (method, seed) job, and its seed's Stage 0, on `--n` greedy episodes per task of a
split, on seeds disjoint from the table's (`--eval-seed`, default 20 000), and prints successes
with a 95 % Wilson interval per task.

Each version's counts are kept in OUT/per_task_eval/ (with the version number evaluated), so a
rerun evaluates only the versions it has not seen: a table that gains a method or a seed costs only
its new versions. With more than one seed it also prints each method's successes pooled over the
seeds, and every method's per-seed difference from the SFT-only control (the seed-to-seed spread
of that difference is the noise a gain has to clear).
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


def cached_or_evaluate(out: Path, label: str, checkpoints: Path, tasks: tuple[str, ...], n: int, seed: int,
                       max_steps: int | None = None) -> dict[str, int]:
    """`evaluate_version`'s counts, from OUT/per_task_eval/ when this version was evaluated on the
    same tasks and episodes before (a version published since is evaluated again)."""
    from episodes.durable import write_json_atomic
    from vla.registry import CheckpointRegistry

    version = CheckpointRegistry(checkpoints).latest()
    cache = out / "per_task_eval" / f"n{n}-from{seed}" / f"{label.replace(' ', '_')}.json"
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved["version"] == version and set(saved["wins"]) == set(tasks) and saved["max_steps"] == max_steps:
            return {t: saved["wins"][t] for t in tasks}  # in the tasks' order (the file's keys are sorted)
    wins = evaluate_version(checkpoints, tasks, n, seed, max_steps)
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache, {"label": label, "version": version, "max_steps": max_steps, "wins": wins})
    return wins


def rate_cell(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"**{k / n:.2f}** ({lo:.2f}–{hi:.2f})"


def pooled_report(counts: dict[str, dict[str, int]], n: int, control: str = "sft_only") -> str:
    """Per method, the successes of its seeds' final versions pooled (Wilson interval over all their
    episodes), then each method's success minus the control's, seed by seed. `counts` maps a label
    "METHOD sSEED" (or "Stage 0 sSEED") to its successes per task, `n` episodes each."""
    by_method: dict[str, dict[int, dict[str, int]]] = {}
    for label, wins in counts.items():
        method, seed = label.rsplit(" s", 1)
        by_method.setdefault(method, {})[int(seed)] = wins
    tasks = list(next(iter(counts.values())))
    lines = ["| version, seeds pooled | seeds | " + " | ".join(tasks) + " | all |",
             "|---|---|" + "---|" * (len(tasks) + 1)]
    for method, seeds in by_method.items():
        m = len(seeds) * n
        per_task = [f"{sum(w[t] for w in seeds.values())}/{m}" for t in tasks]
        total = sum(sum(w.values()) for w in seeds.values())
        lines.append(f"| {method} | {', '.join(map(str, sorted(seeds)))} | " + " | ".join(per_task)
                     + f" | {rate_cell(total, m * len(tasks))} |")
    base = by_method.get(control, {})
    lines += ["", f"Difference from `{control}`, success on all tasks, points, per seed:", "",
              "| version | " + " | ".join(f"seed {s}" for s in sorted(base)) + " | mean | smallest |",
              "|---|" + "---|" * (len(base) + 2)]
    for method, seeds in by_method.items():
        common = sorted(set(seeds) & set(base))
        if method == control or not common:
            continue
        d = {s: 100 * (sum(seeds[s].values()) - sum(base[s].values())) / (n * len(tasks)) for s in common}
        cells = [f"{d[s]:+.0f}" if s in d else "–" for s in sorted(base)]
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {np.mean(list(d.values())):+.1f} | {min(d.values()):+.0f} |")
    return "\n".join(lines)


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
    counts = {}
    for label, checkpoints in rows:
        wins = counts[label] = cached_or_evaluate(out, label, checkpoints, tasks, args.n, args.eval_seed,
                                                  cfg.get("max_steps") or None)
        cells = [f"{k}/{args.n} ({wilson(k, args.n)[0]:.2f}–{wilson(k, args.n)[1]:.2f})" for k in wins.values()]
        print(f"| {label} | " + " | ".join(cells) + f" | {rate_cell(sum(wins.values()), args.n * len(tasks))} |",
              flush=True)
    if len({label.rsplit(" s", 1)[1] for label in counts}) > 1:
        print("\n" + pooled_report(counts, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
