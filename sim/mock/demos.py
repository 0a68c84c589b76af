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
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from episodes.store import EpisodeStore
from protocol.images import encode_jpeg
from sim.mock.backend import CAMERA_NAMES, MockRobot
from sim.mock.expert import DEFAULT_NOISE
from sim.mock.sim import clamp_action
from sim.mock.tasks import SPLITS, TASK_NAMES

log = logging.getLogger(__name__)
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
    instruction = robot.new_episode(seed=seed, task=task, split=split)
    robot.arm.reset_home()
    steps = []
    for _ in range(robot.max_steps):
        frames = {name: cam.read() for name, cam in robot.cameras.items()}
        state = robot.arm.state()
        clean, action = robot.expert_action_pair()
        robot.arm.move_delta(action)
        record = {
            "state": state.vector().tolist(),
            "action": executed_action(action),
            "expert_action": [float(x) for x in clean],  # the expert's intent, before its noise
            "action_chunk": None, "chunk_index": 0, "log_prob": None, "value": None,
            "policy_version": -1, "instruction": instruction,
            "t_capture": min(f.t_capture for f in frames.values()), "t_act": time.time(), "safety": {},
        }
        steps.append((record, frames))
        if robot.success():
            break
    return steps, robot.success()


def record_demos(store: EpisodeStore, task: str = "reach", n: int = 50, seed: int = 0,
                 noise: float = DEFAULT_NOISE, image_size: int = 96, cameras: tuple[str, ...] = ("front",),
                 keep_failures: bool = False, split: str = "train", robot_id: str = ROBOT_ID,
                 progress: bool = False, max_attempts: int | None = None) -> list[dict]:
    """Record expert episodes with seeds seed, seed+1, ... until ``n`` are kept (at most
    ``max_attempts``, default 2n+10, tried). Returns the metadata of the kept episodes, including
    ones that were already in the store from an earlier identical call."""
    robot = MockRobot(task=task, image_size=image_size, cameras=cameras, expert_noise=noise, split=split)
    kept: list[dict] = []
    attempts = max_attempts if max_attempts is not None else 2 * n + 10
    bar = tqdm(total=n, desc=f"demos {task}", unit="ep", disable=not progress)
    for s in range(seed, seed + attempts):
        if len(kept) >= n:
            break
        episode_id = f"{task}-s{s}"
        existing = store.read_meta(robot_id, episode_id)
        if existing is not None:
            if existing.get("outcome") == "success" or keep_failures:
                kept.append(existing)
                bar.update(1)
            continue
        steps, ok = record_episode(robot, s, task, split)
        if not ok and not keep_failures:
            continue
        for i, (record, frames) in enumerate(steps):
            store.append_step(robot_id, episode_id, i, record,
                              {name: encode_jpeg(f.image) for name, f in frames.items()})
        meta = {
            "source": "expert", "outcome": "success" if ok else "failure", "label_source": "auto",
            "n_steps": len(steps), "instruction": robot.instruction, "task": robot.task_name,
            "task_spec": robot.task.to_dict(), "split": split, "seed": s, "noise": noise,
            "image_size": image_size, "cameras": list(cameras), "backend": "mock",
        }
        store.finish(robot_id, episode_id, meta)
        kept.append(store.read_meta(robot_id, episode_id))
        bar.update(1)
    bar.close()
    if len(kept) < n:
        log.warning("kept %d of %d requested %s demos after %d attempts", len(kept), n, task, attempts)
    return kept


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
