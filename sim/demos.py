"""The expert-demonstration recording loop shared by the simulators' ``demos`` commands.

Each simulator supplies its robot (``SimulatedRobot``) and how its arm executes an action (the
record's ``action``); the loop, the store layout and the episode metadata are the same for all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from episodes.store import EpisodeStore
from protocol.images import encode_jpeg
from sim.faults import SimulatedRobot

log = logging.getLogger(__name__)
ExecutedAction = Callable[[np.ndarray], list[float]]


class KeptDemos(list):
    """The kept demos' metadata, with how many episodes this call ran and how many succeeded."""

    attempts = 0
    successes = 0


def record_expert_episode(robot: SimulatedRobot, seed: int, task: str, split: str,
                          executed_action: ExecutedAction) -> tuple[list, bool]:
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


def record_expert_demos(robot: SimulatedRobot, store: EpisodeStore, executed_action: ExecutedAction, *,
                        backend: str, task: str, n: int, seed: int, noise: float, image_size: int,
                        cameras: tuple[str, ...], keep_failures: bool, split: str, robot_id: str,
                        progress: bool, max_attempts: int | None) -> KeptDemos:
    """Record expert episodes with seeds seed, seed+1, ... until ``n`` are kept (at most
    ``max_attempts``, default 2n+10, tried); returns the metadata of the kept episodes (also of
    those already in the store from an earlier identical call)."""
    kept = KeptDemos()
    attempts = max_attempts if max_attempts is not None else 2 * n + 10
    bar = tqdm(total=n, desc=f"demos {task}", unit="ep", disable=not progress)
    try:
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
            steps, ok = record_expert_episode(robot, s, task, split, executed_action)
            kept.attempts += 1
            kept.successes += ok
            if not ok and not keep_failures:
                continue
            for i, (record, frames) in enumerate(steps):
                store.append_step(robot_id, episode_id, i, record,
                                  {name: encode_jpeg(f.image) for name, f in frames.items()})
            meta = {
                "source": "expert", "outcome": "success" if ok else "failure", "label_source": "auto",
                "n_steps": len(steps), "instruction": robot.instruction, "task": robot.task_name,
                "task_spec": robot.task.to_dict(), "split": split, "seed": s, "noise": noise,
                "image_size": image_size, "cameras": list(cameras), "backend": backend,
            }
            store.finish(robot_id, episode_id, meta)
            kept.append(store.read_meta(robot_id, episode_id))
            bar.update(1)
    finally:
        bar.close()
    if len(kept) < n:
        log.warning("kept %d of %d requested %s demos after %d attempts", len(kept), n, task, attempts)
    return kept
