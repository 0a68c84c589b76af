"""MetaWorld rollout throughput on CPU: the learning bench's collection and evaluation, before and after.

    python -m bench.metaworld_throughput [--episodes 12] [--max-steps 60] [--repeats 2] [--json out.json]

Runs exactly what `bench.learning --metaworld` runs per RL round and per evaluation, with the tiny
VLA policy (untrained: every episode runs to its step cap, so every set-up does the same work):

* collection: `--episodes` sampled episodes on the bench's training tasks, every step stored in an
  EpisodeStore (JPEG frames, durable), as an RL round collects them;
* evaluation: `--episodes` greedy episodes on the RL tasks, nothing stored.

Set-ups, each in a fresh process (the llvmpipe thread count is fixed when the first GL context is
made), all in the same run:

* ``before``: the path as it was: scenes in the job's process, llvmpipe's default helper threads
  (one per CPU), every step's frame rendered as the step is taken, each stored step committed
  (fsynced) alone;
* ``one core``: llvmpipe in the calling thread (``LP_NUM_THREADS=0``, sim.metaworld's default now),
  the frames inside a chunk drawn at the episode's end from snapshots and only for successes (a
  failure keeps its decision frames: learner.evaluate's ``_Recorder``), the steps of all scenes
  at one time step in one group commit; still one process;
* ``W workers``: the same with the scenes in W env worker processes (sim.metaworld.vec), kept
  across rollouts, the policy batched over all scenes in the parent.

Columns: episodes per minute (collection, evaluation, and both as the bench mixes them: one
evaluation episode per collected one; of the fastest of `--repeats` repeats, the least disturbed
by other jobs on a shared machine), ms per env step of one scene, the ratio to ``before``, and the
CPU time per episode of the set-ups without workers (all threads of the process, median over the
repeats: the work itself, whatever the load).
The untrained policy never succeeds, so the new path draws no frame inside a chunk; the "all
successes" columns add what drawing every one of them would cost (the frames counted, times the
measured cost of drawing one from a snapshot): the new path's worst case. Real runs lie between.
The first rollout of a set-up (processes, envs, GL contexts) is start-up, outside the timed part.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

TASK = "bench"  # the learning bench's task sets (sim/metaworld/tasks.py)


def measure(episodes: int, max_steps: int, repeats: int, workers: int, baseline: bool) -> dict:
    """In this process: warm up, then `repeats` x (one collection round + one evaluation)."""
    import torch

    import sim.metaworld  # noqa: F401  (MUJOCO_GL, LP_NUM_THREADS before mujoco)
    from bench.harness import publish_tiny
    from episodes.store import EpisodeStore
    from learner.evaluate import close_worker_pools, rollout
    from vla.policy import Policy

    torch.set_num_threads(1)  # as a learning-bench job
    tmp = tempfile.mkdtemp(prefix="mw-throughput-")
    _, registry, _ = publish_tiny(tmp)
    policy = Policy.load(registry)
    g = torch.Generator().manual_seed(0)
    store = EpisodeStore(f"{tmp}/episodes")
    kw = dict(backend="metaworld", workers=workers, max_steps=max_steps)
    seeds = range(episodes)
    # start-up: every env, GL context and worker process the timed part will use
    rollout(policy, seeds, TASK, "sample", g, split="train", backend="metaworld", workers=workers, max_steps=2)
    rollout(policy, seeds, TASK, "greedy", split="rl", backend="metaworld", workers=workers, max_steps=2)
    collect, evaluate = [], []  # per repeat: (wall s, CPU s of this process: all its threads)
    steps = 0
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        res = rollout(policy, seeds, TASK, "sample", g, store=store, split="train", baseline_recording=baseline, **kw)
        collect.append((time.perf_counter() - t, time.process_time() - c))
        steps += int(res.steps.sum())
        t, c = time.perf_counter(), time.process_time()
        res = rollout(policy, seeds, TASK, "greedy", split="rl", **kw)
        evaluate.append((time.perf_counter() - t, time.process_time() - c))
        steps += int(res.steps.sum())
    close_worker_pools()
    # on a machine shared with other jobs the least disturbed repeat is the closest to the set-up's
    # own speed: the fastest one counts; the CPU time is the work itself, whatever the load
    collect_s, eval_s = min(w for w, _ in collect), min(w for w, _ in evaluate)
    cpu_s = float(np.median([a[1] + b[1] for a, b in zip(collect, evaluate, strict=True)]))
    # the untrained policy never succeeds, so the new path draws no frame inside a chunk; a success
    # would have each of them drawn from its snapshot: their measured cost, for the bound below
    deferred = 0 if baseline else sum(max_steps - -(-max_steps // policy.spec.chunk) for _ in seeds)
    bound_s = collect_s + deferred * _draw_s()
    return {"collect_episodes_per_min": 60 * episodes / collect_s, "eval_episodes_per_min": 60 * episodes / eval_s,
            "episodes_per_min": 60 * 2 * episodes / (collect_s + eval_s),
            "collect_all_success_per_min": 60 * episodes / bound_s,
            "episodes_per_min_all_success": 60 * 2 * episodes / (bound_s + eval_s),
            "ms_per_step": 1000 * (collect_s + eval_s) / (steps / repeats),
            "cpu_ms_per_episode": None if workers else 1000 * cpu_s / (2 * episodes), "steps": steps}


def _draw_s(n: int = 40) -> float:
    """Seconds to draw one frame from a snapshot (sim.metaworld.vec's render_snapshots), measured
    on one scene of the bench's RL tasks."""
    from sim.metaworld.vec import MetaWorldVec

    with MetaWorldVec(1, seeds=[0], task=TASK, split="rl") as vec:
        states = []
        for _ in range(n):
            states.append(vec.snapshots()[0])
            vec.step(vec.expert_actions(noise=0.1))
        vec.render_snapshots({0: states[:1]})  # the GL context: start-up
        t = time.perf_counter()
        vec.render_snapshots({0: states})
        return (time.perf_counter() - t) / n


SETUPS = {  # name -> (env overrides, workers, baseline recording)
    "before": ({"LP_NUM_THREADS": str(os.cpu_count() or 1)}, 0, True),
    "one core": ({"LP_NUM_THREADS": "0"}, 0, False),
}


def run_setup(name: str, env: dict, workers: int, baseline: bool, args) -> dict:
    """One set-up in a fresh Python process (its own llvmpipe thread count)."""
    cmd = [sys.executable, "-m", "bench.metaworld_throughput", "--child", json.dumps(
        {"episodes": args.episodes, "max_steps": args.max_steps, "repeats": args.repeats, "workers": workers,
         "baseline": baseline})]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"set-up {name!r} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{name}: {row['episodes_per_min']:.1f} episodes / min", flush=True)
    return {"setup": name, **row}


def format_table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| set-up | collection episodes / min | evaluation episodes / min | both, episodes / min | "
             "× before | ms / env step | CPU ms / episode | × before (CPU) | both, all successes (bound) | × before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    base_cpu = base["cpu_ms_per_episode"]
    for r in rows:
        cpu = r["cpu_ms_per_episode"]
        cpu_cells = "– | –" if cpu is None else f"{cpu:.0f} | {base_cpu / cpu:.2f}"
        lines.append(f"| {r['setup']} | {r['collect_episodes_per_min']:.1f} | {r['eval_episodes_per_min']:.1f} | "
                     f"{r['episodes_per_min']:.1f} | {r['episodes_per_min'] / base['episodes_per_min']:.2f} | "
                     f"{r['ms_per_step']:.2f} | {cpu_cells} | "
                     f"{r['episodes_per_min_all_success']:.1f} | "
                     f"{r['episodes_per_min_all_success'] / base['episodes_per_min']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.metaworld_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=12, help="episodes per rollout (the bench's round size)")
    p.add_argument("--max-steps", type=int, default=60, help="step cap per episode")
    p.add_argument("--repeats", type=int, default=2, help="timed collection + evaluation pairs per set-up")
    p.add_argument("--workers", type=int, nargs="+", default=[2], help="env worker counts to measure")
    p.add_argument("--json", default=None)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return 0
    setups = dict(SETUPS)
    for w in args.workers:
        setups[f"{w} workers"] = ({"LP_NUM_THREADS": "0"}, w, False)
    rows = [run_setup(name, *spec, args) for name, spec in setups.items()]
    table = format_table(rows)
    print(f"\nMetaWorld `{TASK}`, {args.episodes} episodes per rollout of at most {args.max_steps} steps, "
          f"{args.repeats} x (collection + evaluation) per set-up, tiny policy, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}\n\n{table}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
