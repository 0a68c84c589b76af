"""``python -m sim.metaworld.report [--tasks ...] [--n 20] [--noise 0.1] [--max-steps 500]``:
the scripted experts' success rate and steps to success per task (how tasks.MAX_STEPS was set)."""

from __future__ import annotations

import argparse
import time

import numpy as np

from sim.metaworld.env import MetaWorldScene
from sim.metaworld.expert import DEFAULT_NOISE, add_noise
from sim.metaworld.tasks import MAX_STEPS, TASKS


def expert_episode(scene: MetaWorldScene, task: str, seed: int, noise: float, max_steps: int) -> int | None:
    """Steps to success of one noisy expert episode; None if it did not succeed in max_steps."""
    scene.reset(task, seed)
    rng = np.random.default_rng([seed, 0xE4])
    for step in range(1, max_steps + 1):
        scene.step(add_noise(scene.expert_action(), rng, noise))
        if scene.success():
            return step
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="sim.metaworld.report", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS))
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--noise", type=float, default=DEFAULT_NOISE)
    p.add_argument("--max-steps", type=int, default=500)
    args = p.parse_args(argv)
    scene = MetaWorldScene()
    print("| task | expert success | median steps | max steps seen | limit |\n|---|---|---|---|---|")
    for task in args.tasks:
        t = time.time()
        steps = [expert_episode(scene, task, s, args.noise, args.max_steps) for s in range(args.n)]
        ok = [s for s in steps if s is not None]
        med = f"{np.median(ok):.0f}" if ok else "–"
        print(f"| {task} | {len(ok)}/{args.n} | {med} | {max(ok) if ok else '–'} | {MAX_STEPS.get(task)} |"
              f"  ({time.time() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
