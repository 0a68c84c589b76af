"""MetaWorld rollout throughput on CPU: is the simulator the bottleneck of training and evaluation?

    python -m bench.metaworld_throughput [--episodes 8] [--max-steps 60] [--workers 0 2] [--json out.json]

Runs the tiny VLA policy (sampled actions, chunk executed open loop, as learner.evaluate does) on
MT10 episodes (seeds 0..E-1, the task drawn per seed) in three set-ups, all in the same run:

* ``gymnasium renderer`` (the baseline): one env at a time, frames from gymnasium's
  ``env.render()`` (4096 shadow map, 4x multisampling), one policy call per scene;
* ``fast renderer``: sim.metaworld's renderer (no multisampling, shadows, reflections), all E
  scenes in this process, one batched policy call for all of them;
* ``fast renderer, W workers``: the same over W env processes (sim.metaworld.vec.MetaWorldVec).

Columns: episodes per minute (episodes capped at --max-steps steps, so the column is comparable
across rows; a full episode is 100-250 steps), env steps per second, and per call: render ms
(one camera, one scene), env ms (one MetaWorld step of one scene, as the caller waits for it:
with workers this is the batch's wall time / scenes), policy ms (one decision of one scene).
Creating an env and its GL context (the first frame) is start-up, outside the timed loop.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, field

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402


@dataclass
class Timings:
    """Accumulated wall time per kind of work, and the counts to turn it into per-call figures."""

    render_s: float = 0.0
    renders: int = 0
    env_s: float = 0.0
    env_steps: int = 0
    policy_s: float = 0.0
    decisions: int = 0
    wall_s: float = 0.0
    episodes: int = 0
    extra: dict = field(default_factory=dict)

    def row(self, name: str) -> dict:
        return {"setup": name, "episodes_per_min": 60 * self.episodes / self.wall_s,
                "steps_per_s": self.env_steps / self.wall_s,
                "render_ms": 1000 * self.render_s / max(self.renders, 1),
                "env_ms": 1000 * self.env_s / max(self.env_steps, 1),
                "policy_ms": 1000 * self.policy_s / max(self.decisions, 1), **self.extra}


def _policy():
    import torch

    from bench.harness import publish_tiny
    from vla.policy import Policy

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    _, registry, _ = publish_tiny(tempfile.mkdtemp(prefix="mw-throughput-"))
    return Policy.load(registry)


def _act(policy, images: list[np.ndarray], states: np.ndarray, instructions: list[str], t: Timings, g):
    from vla.policy import Observation

    obs = [Observation({"front": img}, s, text) for img, s, text in zip(images, states, instructions, strict=True)]
    t0 = time.perf_counter()
    outs = policy.act_batch(obs, ["sample"] * len(obs), g)
    t.policy_s += time.perf_counter() - t0
    t.decisions += len(obs)
    return np.stack([o.actions for o in outs])


def run_gymnasium(policy, seeds: list[int], max_steps: int, size: int, g) -> Timings:
    """The baseline: gymnasium's MT1 envs and their default renderer, one scene at a time."""
    import gymnasium as gym
    import metaworld  # noqa: F401  (registers the Meta-World/ envs)

    from sim.metaworld.actions import to_metaworld
    from sim.metaworld.tasks import sample_task

    t, envs = Timings(), {}
    start = time.perf_counter()
    try:
        for seed in seeds:
            spec = sample_task(seed, "mt10")
            if spec.name not in envs:
                t0 = time.perf_counter()
                envs[spec.name] = gym.make("Meta-World/MT1", env_name=f"{spec.name}-v3", render_mode="rgb_array",
                                           camera_name="corner", width=size, height=size)
                envs[spec.name].reset(seed=seed)
                envs[spec.name].render()  # the GL context is made on the first frame: not a per-frame cost
                start += time.perf_counter() - t0
            env = envs[spec.name]
            obs, _ = env.reset(seed=seed)
            steps = 0
            while steps < min(max_steps, spec.max_steps):
                t0 = time.perf_counter()
                img = env.render()[::-1, ::-1]
                t.render_s += time.perf_counter() - t0
                t.renders += 1
                state = np.concatenate([obs[:3], [np.pi, 0, 0], [obs[3]]]).astype(np.float32)
                chunk = _act(policy, [img], state[None], [spec.instruction], t, g)[0]
                done = False
                for a in chunk:
                    t0 = time.perf_counter()
                    obs, _, _, _, info = env.step(to_metaworld(a))
                    t.env_s += time.perf_counter() - t0
                    t.env_steps += 1
                    steps += 1
                    done = bool(info["success"]) or steps >= min(max_steps, spec.max_steps)
                    if done:
                        break
                if done:
                    break
            t.episodes += 1
    finally:
        for env in envs.values():
            env.close()
    t.wall_s = time.perf_counter() - start
    return t


def run_fast(policy, seeds: list[int], max_steps: int, size: int, workers: int, g) -> Timings:
    """sim.metaworld's batched scenes: all episodes at once, one policy call per decision."""
    from sim.metaworld.vec import MetaWorldVec

    t = Timings()
    t0 = time.perf_counter()
    vec = MetaWorldVec(len(seeds), image_size=size, seeds=seeds, task="mt10", workers=workers)
    vec.render(size, "front")  # the GL contexts are made on the first frame: not a per-frame cost
    t.extra["startup_s"] = time.perf_counter() - t0
    start = time.perf_counter()
    try:
        vec.max_steps = np.minimum(vec.max_steps, max_steps)
        while not vec.done.all():
            active = np.flatnonzero(~vec.done)
            t0 = time.perf_counter()
            images = vec.render(size, "front")
            t.render_s += time.perf_counter() - t0
            t.renders += vec.n
            states = vec.states()
            chunks = _act(policy, [images[i] for i in active], states[active],
                          [vec.instructions[i] for i in active], t, g)
            plan = np.zeros((vec.n, chunks.shape[1], 7))
            plan[active] = chunks
            for k in range(plan.shape[1]):
                if vec.done.all():
                    break
                live = int((~vec.done).sum())
                t0 = time.perf_counter()
                vec.step(plan[:, k])
                t.env_s += time.perf_counter() - t0
                t.env_steps += live
        t.episodes = vec.n
    finally:
        vec.close()
    t.wall_s = time.perf_counter() - start
    return t


def format_table(rows: list[dict]) -> str:
    base = rows[0]["episodes_per_min"]
    lines = ["| set-up | episodes / min | × baseline | env steps / s | render ms | env ms | policy ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setup']} | {r['episodes_per_min']:.1f} | {r['episodes_per_min'] / base:.1f} | "
                     f"{r['steps_per_s']:.1f} | {r['render_ms']:.1f} | {r['env_ms']:.2f} | {r['policy_ms']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    import sim.metaworld  # noqa: F401  (MUJOCO_GL before mujoco)

    p = argparse.ArgumentParser(prog="bench.metaworld_throughput", description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--max-steps", type=int, default=60)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    policy = _policy()
    seeds = list(range(args.episodes))
    g = torch.Generator().manual_seed(0)
    rows = [run_gymnasium(policy, seeds, args.max_steps, args.image_size, g).row("gymnasium renderer, 1 scene")]
    print(f"baseline done: {rows[0]['episodes_per_min']:.1f} episodes / min", flush=True)
    for w in args.workers:
        name = f"fast renderer, {args.episodes} scenes batched" + (f", {w} env workers" if w else ", in process")
        rows.append(run_fast(policy, seeds, args.max_steps, args.image_size, w, g).row(name))
        print(f"{name} done", flush=True)
    table = format_table(rows)
    print(f"\nMT10, {args.episodes} episodes of at most {args.max_steps} steps, {args.image_size} px, "
          f"tiny policy (chunk {policy.spec.chunk}), {os.cpu_count()} CPUs\n\n{table}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
