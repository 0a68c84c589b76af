"""Scripted MetaWorld demonstrations into the episode store, exactly as the mock's demos are stored.

    vlaloop demos --backend metaworld --task button-press-topdown --n 20 [--noise 0.1] [--seed 0]

Episodes go to ``<run_dir>/episodes/expert/<task>-s<seed>/`` with ``source: "expert"``,
``label_source: "auto"`` and MetaWorld's success as the outcome; only successes are kept unless
``keep_failures``; recording continues with the next seeds until ``n`` are kept. ``task`` may be
a task set (``mt10``, ``bench``): each seed then draws its task from the set's ``split``.
"""

from __future__ import annotations

import logging
import time

from tqdm import tqdm

from episodes.store import EpisodeStore
from protocol.images import encode_jpeg
from sim.metaworld.actions import executed_action
from sim.metaworld.backend import MetaWorldRobot
from sim.metaworld.expert import DEFAULT_NOISE

log = logging.getLogger(__name__)
ROBOT_ID = "expert"


def record_episode(robot: MetaWorldRobot, seed: int, task: str, split: str = "train") -> tuple[list, bool]:
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


def record_demos(store: EpisodeStore, task: str = "button-press-topdown", n: int = 20, seed: int = 0,
                 noise: float = DEFAULT_NOISE, image_size: int = 96, cameras: tuple[str, ...] = ("front",),
                 keep_failures: bool = False, split: str = "train", robot_id: str = ROBOT_ID,
                 progress: bool = False, max_attempts: int | None = None,
                 robot: MetaWorldRobot | None = None) -> list[dict]:
    """Record expert episodes with seeds seed, seed+1, ... until ``n`` are kept (at most
    ``max_attempts``, default 2n+10, tried); returns the metadata of the kept episodes (also of
    those already in the store). Each returned list carries the attempts in ``.attempts``."""
    own = robot is None
    robot = robot or MetaWorldRobot(task=task, image_size=image_size, cameras=cameras, expert_noise=noise,
                                    split=split)
    kept = _KeptDemos()
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
            steps, ok = record_episode(robot, s, task, split)
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
                "image_size": image_size, "cameras": list(cameras), "backend": "metaworld",
            }
            store.finish(robot_id, episode_id, meta)
            kept.append(store.read_meta(robot_id, episode_id))
            bar.update(1)
    finally:
        bar.close()
        if own:
            robot.close()
    if len(kept) < n:
        log.warning("kept %d of %d requested %s demos after %d attempts", len(kept), n, task, attempts)
    return kept


class _KeptDemos(list):
    """The kept demos' metadata, with how many episodes this call ran and how many succeeded."""

    attempts = 0
    successes = 0
