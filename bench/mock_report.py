"""Measure the mock and draw it: ``python -m bench.mock_report``.

Prints a markdown table of expert and random-policy success rates per task (vectorized scenes,
seeded), render and step timings, and writes ``docs/img/mock_<task>.png``: frames of one expert
episode per task (start, two intermediate frames, last frame) rendered at 224x224.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sim.mock.backend import MockRobot
from sim.mock.expert import DEFAULT_NOISE
from sim.mock.sim import render
from sim.mock.tasks import FAMILIES, sample_episode
from sim.mock.vec import VecScene, expert_policy, random_policy, run_policy


def _best_ms(fn, repeats: int = 5, number: int = 200) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number * 1e3)
    return best


def success_table(n: int, noise: float) -> list[str]:
    rows = [f"| task | max steps | expert (noise {noise:.2f}) | expert mean steps | expert, held-out split | "
            "expert (noise 0.3) | random policy |", "|---|---|---|---|---|---|---|"]
    for task in FAMILIES:
        seeds = range(n)
        ok, steps = run_policy(task, seeds, expert_policy(noise))
        held, _ = run_policy(task, seeds, expert_policy(noise), split="held_out")
        noisy, _ = run_policy(task, seeds, expert_policy(0.3))
        rnd, _ = run_policy(task, seeds, random_policy(seed=0))
        max_steps = sample_episode(0, task).task.max_steps
        rows.append(f"| {task} | {max_steps} | {ok.mean():.3f} | {steps[ok].mean():.1f} | {held.mean():.3f} | "
                    f"{noisy.mean():.3f} | {rnd.mean():.3f} |")
    return rows


def timing_table() -> list[str]:
    state = sample_episode(0, "pick_place").state
    robot = MockRobot(task="pick_place")
    vec = VecScene(256, seeds=range(256), task="pick_place")
    actions = vec.expert_actions()
    load = os.getloadavg()[0]
    rows = [f"| what (best of 5 batches; load average {load:.1f} on {os.cpu_count()} cores) | time |", "|---|---|"]
    for size in (96, 224):
        rows.append(f"| render front {size}x{size} | {_best_ms(lambda s=size: render(state, s)):.3f} ms |")
    rows.append(f"| render wrist 96x96 | {_best_ms(lambda: render(state, 96, 'wrist')):.3f} ms |")
    rows.append(f"| MockRobot camera.read() 96x96 | {_best_ms(robot.cameras['front'].read):.3f} ms |")
    rows.append(f"| MockRobot arm.move_delta() | {_best_ms(lambda: robot.arm.move_delta(np.zeros(7))):.3f} ms |")

    def vec_step():
        vec.steps[:] = 0  # keep every scene active
        vec.succeeded[:] = False
        vec.step(actions)

    per_scene = _best_ms(vec_step, number=50) / vec.n * 1e3
    rows.append(f"| VecScene.step, 256 scenes | {per_scene:.2f} us per scene-step |")
    return rows


def draw_episode(task: str, seed: int, path: Path, size: int = 224, noise: float = DEFAULT_NOISE) -> str:
    robot = MockRobot(task=task, image_size=size, expert_noise=noise)
    instruction = robot.new_episode(seed=seed)
    frames = [robot.cameras["front"].read().image]
    for _ in range(robot.max_steps):
        robot.arm.move_delta(robot.expert_action())
        frames.append(render(robot.scene.state, size))
        if robot.success():
            break
    picks = [frames[0], frames[len(frames) // 3], frames[2 * len(frames) // 3], frames[-1]]
    strip = np.concatenate(picks, axis=1)
    canvas = Image.new("RGB", (strip.shape[1], size + 22), (255, 255, 255))
    canvas.paste(Image.fromarray(strip), (0, 22))
    outcome = "success" if robot.success() else "failure"
    ImageDraw.Draw(canvas).text((6, 5), f'"{instruction}"  (seed {seed}, {len(frames) - 1} steps, {outcome})',
                                fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return instruction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="seeded episodes per task")
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE)
    parser.add_argument("--img-dir", default="docs/img")
    args = parser.parse_args(argv)
    print("\n".join(success_table(args.n, args.noise)))
    print()
    print("\n".join(timing_table()))
    for task, seed in zip(FAMILIES, (3, 4, 1), strict=True):
        path = Path(args.img_dir) / f"mock_{task}.png"
        draw_episode(task, seed, path)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
