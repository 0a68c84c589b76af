"""``vlaloop demos``: record scripted expert demonstrations on the mock into the episode store.

    vlaloop demos --task reach --n 50 [--noise 0.1] [--seed 0]

Episodes go to ``<run_dir>/episodes/expert/<task>-s<seed>/`` in the learner's store format with
``source: "expert"``, ``label_source: "auto"`` and the outcome of the task's success predicate.
Only successful episodes are kept unless ``--keep-failures``; recording continues with the next
seeds until ``n`` episodes are kept. Episodes already in the store are not recorded again. Only
``train``-split tasks are used unless ``--split`` says otherwise (held-out combinations stay unseen).
``--backend metaworld`` records MetaWorld's scripted experts instead (sim.metaworld.demos).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from episodes.store import EpisodeStore
from sim.demos import record_expert_demos, record_expert_episode
from sim.mock.backend import CAMERA_NAMES, MockRobot
from sim.mock.expert import DEFAULT_NOISE
from sim.mock.sim import clamp_action
from sim.mock.tasks import SPLITS, TASK_NAMES

ROBOT_ID = "expert"


def executed_action(action: np.ndarray) -> list[float]:
    """The action as the arm executes it (per-step limits applied), gripper as commanded."""
    clamped = clamp_action(action)
    if clamped is None:
        return [0.0] * 6 + [float(action[6])]
    d, r, _ = clamped
    return [*map(float, d), *map(float, r), float(action[6])]


def record_episode(robot: MockRobot, seed: int, task: str, split: str = "train") -> tuple[list, bool]:
    """Run the expert for one episode; returns ([(record, frames)], success) without storing."""
    return record_expert_episode(robot, seed, task, split, executed_action)


def record_demos(store: EpisodeStore, task: str = "reach", n: int = 50, seed: int = 0,
                 noise: float = DEFAULT_NOISE, image_size: int = 96, cameras: tuple[str, ...] = ("front",),
                 keep_failures: bool = False, split: str = "train", robot_id: str = ROBOT_ID,
                 progress: bool = False, max_attempts: int | None = None) -> list[dict]:
    """Record expert episodes with seeds seed, seed+1, ... until ``n`` are kept (at most
    ``max_attempts``, default 2n+10, tried). Returns the metadata of the kept episodes, including
    ones that were already in the store from an earlier identical call."""
    robot = MockRobot(task=task, image_size=image_size, cameras=cameras, expert_noise=noise, split=split)
    kept = record_expert_demos(robot, store, executed_action, backend="mock", task=task, n=n, seed=seed,
                               noise=noise, image_size=image_size, cameras=cameras,
                               keep_failures=keep_failures, split=split, robot_id=robot_id,
                               progress=progress, max_attempts=max_attempts)
    return list(kept)  # a plain list: the demos command reports the expert's success rate for MetaWorld only


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["mock", "metaworld"], default="mock",
                        help="simulator with scripted experts (metaworld: docs/metaworld.md)")
    parser.add_argument("--task", default=None,
                        help=f"mock: one of {', '.join(TASK_NAMES)} (default reach); metaworld: a MetaWorld "
                             "task or task set (default button-press-topdown)")
    parser.add_argument("--n", type=int, default=50, help="episodes to keep")
    parser.add_argument("--noise", type=float, default=DEFAULT_NOISE, help="expert noise in [0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="first episode seed")
    parser.add_argument("--image-size", type=int, default=None, help="default: model.image_size")
    parser.add_argument("--cameras", default=None, help="comma-separated (front,wrist); default: model.cameras")
    parser.add_argument("--split", default="train", help=f"mock: one of {SPLITS}; metaworld: of a task set")
    parser.add_argument("--keep-failures", action="store_true")


def run(args: argparse.Namespace, config) -> int:
    model = getattr(config, "model", None)
    image_size = args.image_size or getattr(model, "image_size", 96)
    cameras = tuple(args.cameras.split(",")) if args.cameras else tuple(getattr(model, "cameras", ["front"]))
    backend = getattr(args, "backend", "mock")
    if backend == "metaworld":
        from sim.metaworld.demos import record_demos as record
        from sim.metaworld.env import CAMERA_NAMES as camera_names
        from sim.metaworld.tasks import SPLITS as splits
        from sim.metaworld.tasks import TASK_NAMES as task_names
        task = args.task or "button-press-topdown"
    else:
        record, camera_names, splits, task_names, task = record_demos, CAMERA_NAMES, SPLITS, TASK_NAMES, args.task
        task = task or "reach"
    if task not in task_names:
        print(f"vlaloop demos: unknown {backend} task {task!r} (one of {', '.join(task_names)})")
        return 2
    if args.split not in splits:
        print(f"vlaloop demos: unknown split {args.split!r} (one of {', '.join(splits)})")
        return 2
    unknown = [c for c in cameras if c not in camera_names]
    if unknown:
        print(f"vlaloop demos: unknown {backend} camera(s) {unknown} (one of {camera_names})")
        return 2
    store = EpisodeStore(Path(config.run_dir) / "episodes")
    t0 = time.time()
    kept = record(store, task, args.n, args.seed, args.noise, image_size, cameras,
                  keep_failures=args.keep_failures, split=args.split, progress=True)
    steps = sum(m.get("n_steps", 0) for m in kept)
    tried = getattr(kept, "attempts", None)
    rate = f"; expert success {kept.successes}/{tried} episodes run" if tried else ""
    print(f"{len(kept)} {task} demos ({steps} steps) in {store.root} [{time.time() - t0:.1f} s{rate}]")
    return 0 if len(kept) >= args.n else 1
